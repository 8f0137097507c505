;; counter-global: stateful guest whose state is a NON-exported mutable global (i64 running byte
;; total). Each process_chunk emits the running total so far in decimal followed by '\n'.
;; Used to test that checkpoints capture globals, not only memory.
;; Guest ABI v1: see docs/abi.md.
(module
  (import "sandbox" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 2)
  (global $total (mut i64) (i64.const 0))

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

  ;; Writes $v in decimal at $dst; returns the address just past the last digit.
  (func $utoa (param $v i64) (param $dst i32) (result i32)
    (local $n i32) (local $t i64) (local $p i32)
    (local.set $n (i32.const 1))
    (local.set $t (local.get $v))
    (block $counted
      (loop $count
        (br_if $counted (i64.lt_u (local.get $t) (i64.const 10)))
        (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $count)))
    (local.set $p (i32.add (local.get $dst) (local.get $n)))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
      (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $v) (i64.const 0))))
    (i32.add (local.get $dst) (local.get $n)))

  (func (export "process_chunk") (param $ptr i32) (param $len i32) (result i32)
    (local $o i32)
    (global.set $total (i64.add (global.get $total) (i64.extend_i32_u (local.get $len))))
    (local.set $o (call $utoa (global.get $total) (i32.const 64)))
    (i32.store8 (local.get $o) (i32.const 10))
    (call $emit (i32.const 64) (i32.sub (i32.add (local.get $o) (i32.const 1)) (i32.const 64)))
    (i32.const 0))
)
