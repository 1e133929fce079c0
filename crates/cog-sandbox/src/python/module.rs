//! Turns a CPython `python.wasm` (a WASI command: it exports only `memory`
//! and `_start`) into a module the host can drive call by call: the few C
//! functions the host calls — libc's constructors, CPython's initialisation,
//! running a string, calling an object — are exported under `cog_*` names,
//! found by their names in the module's `name` section. Custom sections
//! (debug info, names) are dropped: they are most of the file and nothing
//! reads them at run time.

use std::collections::HashMap;

use crate::PluginError;

/// `(our export, the function in the interpreter)`.
pub(crate) const EXPORTS: [(&str, &str); 8] = [
    ("cog_ctors", "__wasm_call_ctors"),
    ("cog_config_isolated", "PyConfig_InitIsolatedConfig"),
    ("cog_initialize", "Py_InitializeFromConfig"),
    ("cog_run_string", "PyRun_SimpleStringFlags"),
    ("cog_call", "PyObject_CallNoArgs"),
    ("cog_decref", "Py_DecRef"),
    ("cog_malloc", "malloc"),
    ("cog_free", "free"),
];

const MAGIC: &[u8; 8] = b"\0asm\x01\0\0\0";
const CUSTOM: u8 = 0;
const EXPORT: u8 = 7;

fn invalid(what: &str) -> PluginError {
    PluginError::InvalidModule(format!("not a usable CPython for WASI: {what}"))
}

/// Reads an unsigned LEB128 at `*at`.
fn leb(bytes: &[u8], at: &mut usize) -> Option<u32> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return u32::try_from(value).ok();
        }
    }
    None
}

fn put_leb(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn name<'a>(bytes: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = leb(bytes, at)? as usize;
    let s = bytes.get(*at..*at + len)?;
    *at += len;
    Some(s)
}

/// The sections of a module: `(id, body)`.
fn sections(wasm: &[u8]) -> Result<Vec<(u8, &[u8])>, PluginError> {
    if wasm.get(..8) != Some(MAGIC) {
        return Err(invalid("no wasm header"));
    }
    let mut at = 8;
    let mut out = Vec::new();
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let len = leb(wasm, &mut at).ok_or_else(|| invalid("truncated section"))? as usize;
        let body = wasm
            .get(at..at + len)
            .ok_or_else(|| invalid("truncated section"))?;
        at += len;
        out.push((id, body));
    }
    Ok(out)
}

/// Function names of the `name` section (subsection 1).
fn function_names(body: &[u8]) -> Option<HashMap<&[u8], u32>> {
    let mut at = 0;
    if name(body, &mut at)? != b"name" {
        return None;
    }
    while at < body.len() {
        let sub = body[at];
        at += 1;
        let len = leb(body, &mut at)? as usize;
        let end = at + len;
        if sub == 1 {
            let mut names = HashMap::new();
            let count = leb(body, &mut at)?;
            for _ in 0..count {
                let index = leb(body, &mut at)?;
                names.insert(name(body, &mut at)?, index);
            }
            return Some(names);
        }
        at = end;
    }
    None
}

/// The interpreter with the host's exports added and custom sections gone.
pub(crate) fn prepare(wasm: &[u8]) -> Result<Vec<u8>, PluginError> {
    let sections = sections(wasm)?;
    let names = sections
        .iter()
        .filter(|(id, _)| *id == CUSTOM)
        .find_map(|(_, body)| function_names(body))
        .ok_or_else(|| invalid("no function names (a stripped build)"))?;
    let mut out = MAGIC.to_vec();
    let mut exported = false;
    for (id, body) in &sections {
        match *id {
            CUSTOM => {}
            EXPORT => {
                let mut at = 0;
                let count = leb(body, &mut at).ok_or_else(|| invalid("bad exports"))?;
                let mut section = Vec::new();
                put_leb(&mut section, count + EXPORTS.len() as u32);
                section.extend_from_slice(&body[at..]);
                for (export, function) in EXPORTS {
                    let index = names
                        .get(function.as_bytes())
                        .ok_or_else(|| invalid(&format!("no function `{function}`")))?;
                    put_leb(&mut section, export.len() as u32);
                    section.extend_from_slice(export.as_bytes());
                    section.push(0); // a function
                    put_leb(&mut section, *index);
                }
                out.push(EXPORT);
                put_leb(&mut out, section.len() as u32);
                out.extend_from_slice(&section);
                exported = true;
            }
            id => {
                out.push(id);
                put_leb(&mut out, body.len() as u32);
                out.extend_from_slice(body);
            }
        }
    }
    if !exported {
        return Err(invalid("no export section"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_round_trips_and_refuses_overlong_values() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut buf = Vec::new();
            put_leb(&mut buf, v);
            let mut at = 0;
            assert_eq!(leb(&buf, &mut at), Some(v));
            assert_eq!(at, buf.len());
        }
        let mut at = 0;
        assert_eq!(leb(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut at), None);
        assert_eq!(leb(&[0x80], &mut 0), None);
    }

    #[test]
    fn garbage_and_stripped_modules_are_refused() {
        assert!(matches!(
            prepare(b"nope"),
            Err(PluginError::InvalidModule(_))
        ));
        // A valid module without a name section.
        let mut stripped = MAGIC.to_vec();
        stripped.extend_from_slice(&[EXPORT, 1, 0]);
        let e = prepare(&stripped).unwrap_err();
        assert!(e.to_string().contains("no function names"), "{e}");
        // A section longer than the file.
        let mut truncated = MAGIC.to_vec();
        truncated.extend_from_slice(&[1, 100, 0]);
        assert!(matches!(
            prepare(&truncated),
            Err(PluginError::InvalidModule(_))
        ));
    }
}
