;; upper-scalar: ASCII upper-case one byte at a time (no SIMD): the "scalar wasm pass" the
;; benchmarks use to show a guest whose work dominates the per-chunk cost.
(module
  (import "sandbox" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 2)
  (func (export "alloc") (param $len i32) (result i32)
    (local $need i32)
    (local.set $need (i32.sub
      (i32.shr_u (i32.add (i32.add (i32.const 1024) (local.get $len)) (i32.const 65535)) (i32.const 16))
      (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
    (i32.const 1024))
  (func (export "process_chunk") (param $ptr i32) (param $len i32) (result i32)
    (local $p i32) (local $end i32) (local $c i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        ;; c - 'a' < 26 (unsigned) means a lower-case letter
        (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
          (then (i32.store8 (local.get $p) (i32.sub (local.get $c) (i32.const 32)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (call $emit (local.get $ptr) (local.get $len))
    (i32.const 0)))
