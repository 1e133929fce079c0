//! The host's imports (module `cog`), with safe wrappers. On other targets
//! than wasm32 they are stubs answering "not allowed" (−3), so plugin
//! crates build and document anywhere.
#![allow(unsafe_code)]

/// A buffer's address as the host sees it (a wasm32 offset), for the
/// host to read.
pub(crate) fn ptr(bytes: &[u8]) -> i32 {
    bytes.as_ptr() as usize as i32
}

/// An out buffer's address, for the host to write into: taken from a
/// mutable borrow, so the compiler knows the bytes may change (a pointer
/// from a shared borrow would let it assume they do not).
pub(crate) fn ptr_mut(bytes: &mut [u8]) -> i32 {
    bytes.as_mut_ptr() as usize as i32
}

macro_rules! imports {
    ($($name:ident($($arg:ident),*);)*) => {
        #[cfg(target_arch = "wasm32")]
        mod raw {
            #[link(wasm_import_module = "cog")]
            unsafe extern "C" {
                $(pub(crate) fn $name($($arg: i32),*) -> i32;)*
            }
        }

        $(
            #[cfg(target_arch = "wasm32")]
            pub(crate) fn $name($($arg: i32),*) -> i32 {
                // SAFETY: the host checks every pointer and length against
                // this module's memory; the arguments are plain integers.
                unsafe { raw::$name($($arg),*) }
            }

            #[cfg(not(target_arch = "wasm32"))]
            pub(crate) fn $name($($arg: i32),*) -> i32 {
                let _ = ($($arg,)*);
                -3
            }
        )*
    };
}

imports! {
    log(level, ptr, len);
    header_get(which, name_ptr, name_len, out, cap);
    header_set(which, name_ptr, name_len, value_ptr, value_len);
    header_remove(which, name_ptr, name_len);
    header_names(which, out, cap);
    request_method(out, cap);
    request_uri(out, cap);
    tenant(out, cap);
    response_status();
    body_read(out, cap);
    body_write(ptr, len);
    reject(status, ptr, len);
    config(out, cap);
    kv_get(key_ptr, key_len, out, cap);
    kv_set(key_ptr, key_len, value_ptr, value_len);
    kv_delete(key_ptr, key_len);
}
