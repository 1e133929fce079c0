;; Counts its calls in a global, in the request header `x-calls` (one
;; digit): a fresh instance says 0. For tests of which instance serves.
(module
  (import "cog" "header_set" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-calls")
  (global $calls (mut i32) (i32.const 0))
  (func (export "cog_abi_version") (result i32) i32.const 1)
  (func (export "cog_on_request") (result i32)
    (i32.store8 (i32.const 16) (i32.add (i32.const 48) (global.get $calls)))
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (drop (call $set (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 1)))
    i32.const 0))
