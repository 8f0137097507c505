;; upper: ASCII upper-cases each chunk in place (a-z -> A-Z, every other byte unchanged), then one emit.
;; 16 bytes at a time with SIMD (build with the wabt "simd" feature), scalar loop for the tail.
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
    (local $p i32) (local $end i32) (local $v v128) (local $c i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    ;; 16 bytes at a time: byte - 'a' <u 26  <=>  'a' <= byte <= 'z'; flip bit 0x20 of those lanes.
    (block $simd_done
      (loop $simd
        (br_if $simd_done (i32.lt_u (i32.sub (local.get $end) (local.get $p)) (i32.const 16)))
        (local.set $v (v128.load align=1 (local.get $p)))
        (v128.store align=1 (local.get $p)
          (v128.xor (local.get $v)
            (v128.and
              (i8x16.lt_u (i8x16.sub (local.get $v) (i8x16.splat (i32.const 0x61)))
                          (i8x16.splat (i32.const 26)))
              (i8x16.splat (i32.const 0x20)))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $simd)))
    ;; Remaining 0..15 bytes.
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (if (i32.lt_u (i32.sub (local.get $c) (i32.const 0x61)) (i32.const 26))
          (then (i32.store8 (local.get $p) (i32.xor (local.get $c) (i32.const 0x20)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $tail)))
    (call $emit (local.get $ptr) (local.get $len))
    (i32.const 0))
)
