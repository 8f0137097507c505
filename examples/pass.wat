;; pass: emits every chunk unchanged (one emit per chunk). Measures the pure cost of the sandbox.
;; Guest ABI v1: see docs/abi.md.
(module
  (import "sandbox" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 2)

  ;; The host's chunk buffer lives at offset 1024; grow memory so [1024, 1024+len) exists.
  (func (export "alloc") (param $len i32) (result i32)
    (local $need i64)
    (local.set $need
      (i64.sub
        (i64.shr_u (i64.add (i64.extend_i32_u (local.get $len)) (i64.const 66559)) (i64.const 16)) ;; 1024 + 65535
        (i64.extend_i32_u (memory.size))))
    (if (i64.gt_s (local.get $need) (i64.const 0))
      (then (if (i32.eq (memory.grow (i32.wrap_i64 (local.get $need))) (i32.const -1))
        (then unreachable))))
    (i32.const 1024))

  (func (export "process_chunk") (param $ptr i32) (param $len i32) (result i32)
    (call $emit (local.get $ptr) (local.get $len))
    (i32.const 0))
)
