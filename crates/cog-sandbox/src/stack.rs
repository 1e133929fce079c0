//! A stack budget for guest code: calls trap in wasm well before the
//! native stack ends.
//!
//! wasmer runs a guest on a stack of its own (1 MiB unless the embedding
//! changes it) with a guard page below. A guest that overflows it in its
//! own code traps cleanly. But some instructions — bulk memory and table
//! operations, atomics' waits — run as *libcalls*, host functions on the
//! guest's stack, and when one of them fails, wasmer builds its trap right
//! there, allocating. A guest that recursed to just short of the edge and
//! then made such a call fail overflowed inside the host's allocator: the
//! unwinding left the allocator's lock held, and the thread hung on its
//! next allocation (wasmer 7.4; the crate README's known issue until
//! this budget).
//!
//! The [`StackBudget`] middleware gives a guest module a global of its own
//! (`__cog_sandbox_stack`: bytes left, set before every call) and charges
//! every call site the callee's frame, estimated from its wasm (see
//! [`frame_bytes`]); the call traps in wasm when the rest would fall under
//! the largest frame of the module (the uncharged entry function's room).
//! The charge is given back when the call returns. The host starts each
//! call with three quarters of the wasm stack, so whatever the guest does
//! at its deepest, a libcall has the last quarter (256 KiB of wasmer's
//! default 1 MiB; building a trap takes a few KiB).
//!
//! A trap for the budget writes [`EXCEEDED`] to the global first, so the
//! host tells it from a guest's own `unreachable`. Calls that end by an
//! exception unwinding past them keep their charge until the host call
//! returns (the next call starts afresh): conservative, never unsafe.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use wasmer::sys::{FunctionMiddleware, MiddlewareError, MiddlewareReaderState, ModuleMiddleware};
use wasmer::wasmparser::{
    BlockType, FuncValidatorAllocations, Operator, Parser, ValType, ValidPayload, Validator,
    WasmFeatures,
};
use wasmer::{AsStoreMut, Instance, LocalFunctionIndex};
use wasmer_types::{GlobalIndex, ModuleInfo};

use crate::error::PluginError;

/// The export naming the budget's global.
const BUDGET_EXPORT: &str = "__cog_sandbox_stack";

/// What the global holds after the guest trapped for its budget.
pub(crate) const EXCEEDED: i32 = i32::MIN;

/// The trap's message when a call went past its budget.
pub(crate) const EXCEEDED_MESSAGE: &str =
    "trap: stack overflow (calls nested past the plugin's stack budget)";

/// Bytes a frame takes beyond its values: return address, saved frame
/// pointer and callee-saved registers, alignment.
const FRAME_BASE: u32 = 64;
/// Bytes charged per local (or parameter) of a scalar or reference type:
/// one spill slot.
const LOCAL_BYTES: u32 = 8;
/// Bytes charged per `v128` local, and per operand stack slot of any type
/// (whose types are not tracked here; a call's arguments beyond the
/// registers are among them).
const WIDE_BYTES: u32 = 16;
/// No frame is charged more (a larger one traps on any call all the
/// same); keeps the guest's `i32` arithmetic on the budget from wrapping.
const MAX_FRAME: u32 = 1 << 30;

/// The native stack a function's frame may take, from its wasm: every
/// value it has at once spilled — its parameters and locals (`scalars`
/// and `wide` (`v128`) ones) and its operand stack at its highest
/// (`max_operands`) — plus the frame's fixed part. An estimate erring
/// large: cranelift's register allocator spills only values live at once,
/// of which a function never has more than those.
pub(crate) fn frame_bytes(scalars: u32, wide: u32, max_operands: u32) -> u32 {
    let values = u64::from(scalars) * u64::from(LOCAL_BYTES)
        + (u64::from(wide) + u64::from(max_operands)) * u64::from(WIDE_BYTES);
    u32::try_from(values + u64::from(FRAME_BASE))
        .unwrap_or(MAX_FRAME)
        .min(MAX_FRAME)
}

/// Every defined function's frame estimate, in order, from the module's
/// bytes (validated on the way: a module that does not validate is
/// refused here as wasmer would refuse it).
pub(crate) fn frame_costs(wasm: &[u8]) -> Result<Vec<u32>, PluginError> {
    let invalid = |e: wasmer::wasmparser::BinaryReaderError| {
        PluginError::InvalidModule(format!("wasm does not validate: {e}"))
    };
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut costs = Vec::new();
    let mut allocs = FuncValidatorAllocations::default();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        let ValidPayload::Func(func, body) = validator.payload(&payload).map_err(invalid)? else {
            continue;
        };
        let mut v = func.into_validator(std::mem::take(&mut allocs));
        let mut reader = body.get_binary_reader();
        v.read_locals(&mut reader).map_err(invalid)?;
        let mut ops = wasmer::wasmparser::OperatorsReader::new(reader);
        let mut highest = 0;
        while !ops.eof() {
            let offset = ops.original_position();
            let op = ops.read().map_err(invalid)?;
            v.op(offset, &op).map_err(invalid)?;
            highest = highest.max(v.operand_stack_height());
        }
        let locals = v.len_locals();
        let wide = (0..locals)
            .filter(|&i| v.get_local_type(i) == Some(ValType::V128))
            .count();
        let wide = u32::try_from(wide).unwrap_or(u32::MAX);
        costs.push(frame_bytes(locals - wide, wide, highest));
        allocs = v.into_allocations();
    }
    Ok(costs)
}

/// The middleware charging call sites against the budget (one per module,
/// like the stop flag's: it remembers its global).
#[derive(Debug)]
pub(crate) struct StackBudget {
    /// Frame estimates of the defined functions, in order.
    costs: Arc<[u32]>,
    /// The largest of them: what a call must leave at least, for the entry
    /// function (which no call site charges) or an indirect callee.
    largest: u32,
    /// Set by `transform_module_info`: the global, and how many functions
    /// are imported (they come first in the index space, run on the host's
    /// stack and are not charged).
    module: std::sync::Mutex<Option<(GlobalIndex, u32)>>,
}

impl StackBudget {
    pub(crate) fn new(costs: Vec<u32>) -> Self {
        StackBudget {
            largest: costs.iter().copied().max().unwrap_or(FRAME_BASE),
            costs: costs.into(),
            module: std::sync::Mutex::new(None),
        }
    }
}

impl ModuleMiddleware for StackBudget {
    fn generate_function_middleware<'a>(
        &self,
        _: LocalFunctionIndex,
    ) -> Box<dyn FunctionMiddleware<'a> + 'a> {
        let (global, imported) = self
            .module
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .expect("transform_module_info runs before the functions are compiled");
        Box::new(FunctionBudget {
            global: global.as_u32(),
            imported,
            costs: self.costs.clone(),
            largest: self.largest,
        })
    }

    fn transform_module_info(&self, info: &mut ModuleInfo) -> Result<(), MiddlewareError> {
        let mut module = self
            .module
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if module.is_some() {
            return Err(MiddlewareError::new(
                "cog-sandbox stack budget",
                "one StackBudget middleware per module",
            ));
        }
        let defined = info.functions.len() - info.num_imported_functions;
        if defined != self.costs.len() {
            return Err(MiddlewareError::new(
                "cog-sandbox stack budget",
                format!(
                    "frame estimates for {} functions, the module defines {defined}",
                    self.costs.len()
                ),
            ));
        }
        // The host sets it before every call; this is for the start
        // function.
        let index = crate::watchdog::add_exported_global(info, BUDGET_EXPORT, call_budget());
        let imported = u32::try_from(info.num_imported_functions).map_err(|_| {
            MiddlewareError::new("cog-sandbox stack budget", "too many imported functions")
        })?;
        *module = Some((index, imported));
        Ok(())
    }
}

#[derive(Debug)]
struct FunctionBudget {
    global: u32,
    imported: u32,
    costs: Arc<[u32]>,
    largest: u32,
}

impl FunctionBudget {
    /// What calling `function` is charged: its frame (a host function
    /// runs on the host's stack: nothing).
    fn direct(&self, function: u32) -> u32 {
        match function.checked_sub(self.imported) {
            Some(i) => self.costs.get(i as usize).copied().unwrap_or(self.largest),
            None => 0,
        }
    }

    /// `budget -= cost`, trapping (after marking the global) when what is
    /// left falls under the largest frame.
    fn charge(&self, cost: u32, state: &mut MiddlewareReaderState<'_>) {
        let g = self.global;
        self.adjust(cost, Operator::I32Sub, state);
        state.extend(&[
            Operator::GlobalGet { global_index: g },
            Operator::I32Const {
                value: self.largest as i32,
            },
            Operator::I32LtS,
            Operator::If {
                blockty: BlockType::Empty,
            },
            Operator::I32Const { value: EXCEEDED },
            Operator::GlobalSet { global_index: g },
            Operator::Unreachable,
            Operator::End,
        ]);
    }

    /// `budget += cost`: the call returned.
    fn refund(&self, cost: u32, state: &mut MiddlewareReaderState<'_>) {
        self.adjust(cost, Operator::I32Add, state);
    }

    /// `budget = budget <op> cost`.
    fn adjust(&self, cost: u32, op: Operator<'static>, state: &mut MiddlewareReaderState<'_>) {
        let g = self.global;
        state.extend(&[
            Operator::GlobalGet { global_index: g },
            Operator::I32Const { value: cost as i32 },
            op,
            Operator::GlobalSet { global_index: g },
        ]);
    }
}

impl<'a> FunctionMiddleware<'a> for FunctionBudget {
    fn feed(
        &mut self,
        operator: Operator<'a>,
        state: &mut MiddlewareReaderState<'a>,
    ) -> Result<(), MiddlewareError> {
        let cost = match &operator {
            Operator::Call { function_index } => self.direct(*function_index),
            // Any function of the table may be the callee.
            Operator::CallIndirect { .. } | Operator::CallRef { .. } => self.largest,
            Operator::ReturnCall { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::ReturnCallRef { .. } => {
                return Err(MiddlewareError::new(
                    "cog-sandbox stack budget",
                    "tail calls are not supported",
                ));
            }
            _ => {
                state.push_operator(operator);
                return Ok(());
            }
        };
        if cost == 0 {
            state.push_operator(operator);
            return Ok(());
        }
        self.charge(cost, state);
        state.push_operator(operator);
        self.refund(cost, state);
        Ok(())
    }
}

/// What a call starts with: three quarters of the wasm stack (wasmer's,
/// as the embedding set it).
fn call_budget() -> i32 {
    i32::try_from(wasmer_vm::get_stack_size() / 4 * 3).unwrap_or(MAX_FRAME as i32)
}

/// The budget's global in one instance (valid as long as the instance).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget(NonNull<u8>);

impl Budget {
    /// The budget of `instance`; `None` for a module compiled without
    /// the [`StackBudget`] middleware (the Python interpreter: our own
    /// build, not a tenant's code).
    pub(crate) fn of(store: &mut impl AsStoreMut, instance: &Instance) -> Option<Self> {
        crate::watchdog::global_storage(store, instance, BUDGET_EXPORT).map(Budget)
    }

    fn cell(&self) -> &AtomicI32 {
        // SAFETY: the pointer is the instance's global storage (16-byte
        // aligned, its first 4 bytes the i32), alive while the instance is
        // (see `of`); only the thread running the instance touches it.
        #[allow(unsafe_code)]
        unsafe {
            AtomicI32::from_ptr(self.0.as_ptr().cast::<i32>())
        }
    }

    /// Starts a call: three quarters of the wasm stack for the guest's
    /// frames.
    pub(crate) fn reset(&self) {
        self.cell().store(call_budget(), Ordering::Relaxed);
    }

    /// Whether the call trapped for its budget.
    pub(crate) fn exceeded(&self) -> bool {
        self.cell().load(Ordering::Relaxed) == EXCEEDED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_charged_for_its_values_and_its_fixed_part() {
        assert_eq!(frame_bytes(0, 0, 0), FRAME_BASE);
        assert_eq!(
            frame_bytes(2, 1, 3),
            FRAME_BASE + 2 * LOCAL_BYTES + 4 * WIDE_BYTES
        );
        assert_eq!(frame_bytes(u32::MAX, 0, 1), MAX_FRAME);
        assert_eq!(frame_bytes(0, u32::MAX, u32::MAX), MAX_FRAME);
    }

    #[test]
    fn costs_follow_each_function_locals_and_operand_stack() {
        let wasm = wat::parse_str(
            r#"(module
                 (import "cog" "log" (func (param i32 i32 i32)))
                 (func)
                 (func (param i32) (local i64 v128 i64)
                   (drop (i32.add (local.get 0) (i32.add (local.get 0) (i32.const 1))))))"#,
        )
        .unwrap();
        // The import is not a defined function; the second one has three
        // scalars and a `v128`, and peaks at three operands.
        assert_eq!(
            frame_costs(&wasm).unwrap(),
            vec![frame_bytes(0, 0, 0), frame_bytes(3, 1, 3)]
        );
        assert!(matches!(
            frame_costs(b"\0asm\x01\0\0\0\x0a"),
            Err(PluginError::InvalidModule(_))
        ));
    }
}
