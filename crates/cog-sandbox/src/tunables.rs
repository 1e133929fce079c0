//! A memory (and table) cap plugged into wasmer, so `memory.grow` fails at
//! the cap instead of growing, and a module asking for more at start does
//! not instantiate.

use std::ptr::NonNull;

use wasmer::sys::vm::{VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, Tunables};
use wasmer::{MemoryError, MemoryStyle, MemoryType, Pages, TableStyle, TableType};

/// Largest table (elements) a plugin may declare.
pub(crate) const MAX_TABLE_ELEMENTS: u32 = 100_000;

/// [`BaseTunables`] with every memory's maximum clamped to `pages`.
pub(crate) struct CapTunables {
    pages: Pages,
    base: BaseTunables,
}

impl CapTunables {
    pub(crate) fn new(pages: u32) -> Self {
        CapTunables {
            pages: Pages(pages),
            base: BaseTunables::new(),
        }
    }

    /// The type the memory really gets: at most the cap.
    fn clamp(&self, ty: &MemoryType) -> MemoryType {
        let mut clamped = *ty;
        clamped.maximum = Some(ty.maximum.map_or(self.pages, |m| m.min(self.pages)));
        clamped
    }

    fn check(&self, ty: &MemoryType) -> Result<(), MemoryError> {
        if ty.minimum > self.pages {
            return Err(MemoryError::Generic(format!(
                "memory of {} pages over the cap of {} pages",
                ty.minimum.0, self.pages.0
            )));
        }
        Ok(())
    }

    fn check_table(ty: &TableType) -> Result<(), String> {
        if ty.minimum > MAX_TABLE_ELEMENTS {
            return Err(format!("table of {} elements over the cap", ty.minimum));
        }
        Ok(())
    }

    /// The table type it really gets: `table.grow` stops at the cap
    /// (without it, a guest can ask the host for a table of 2^32
    /// elements — found by the generated-module test).
    fn clamp_table(ty: &TableType) -> TableType {
        let mut clamped = *ty;
        clamped.maximum = Some(
            ty.maximum
                .map_or(MAX_TABLE_ELEMENTS, |m| m.min(MAX_TABLE_ELEMENTS)),
        );
        clamped
    }
}

impl Tunables for CapTunables {
    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(&self.clamp(memory))
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
    ) -> Result<VMMemory, MemoryError> {
        self.check(ty)?;
        self.base.create_host_memory(&self.clamp(ty), style)
    }

    // The one unsafe item of the memory cap: wasmer's trait declares it
    // unsafe; the body only forwards the caller's guarantee.
    #[allow(unsafe_code)]
    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        self.check(ty)?;
        // SAFETY: forwarded unchanged from our caller, who guarantees it.
        unsafe {
            self.base
                .create_vm_memory(&self.clamp(ty), style, vm_definition_location)
        }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        Self::check_table(ty)?;
        self.base.create_host_table(&Self::clamp_table(ty), style)
    }

    #[allow(unsafe_code)]
    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        Self::check_table(ty)?;
        // SAFETY: forwarded unchanged from our caller, who guarantees it.
        unsafe {
            self.base
                .create_vm_table(&Self::clamp_table(ty), style, vm_definition_location)
        }
    }
}
