;; numberer: stateful line numberer, like `cat -n` without padding: "1\tfoo\n2\tbar\n".
;; Lines may be cut across chunks (works with or without the delimiter option): the line counter
;; and the "in the middle of a line" flag live in linear memory and carry over between calls.
;; A final line without '\n' is numbered and emitted as is. Output is built in a scratch region
;; just past the input (memory grows as needed) and emitted once per chunk.
;; State: [0] lines numbered so far (i64), [8] mid_line flag (i32). flush resets both.
;; Guest ABI v1: see docs/abi.md.
(module
  (import "sandbox" "emit" (func $emit (param i32 i32)))
  (import "sandbox" "fail" (func $fail (param i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "numberer: cannot grow memory for the output") ;; 43 bytes

  ;; Grows memory so that [0, $end) is addressable. Returns 1 on success, 0 if it cannot.
  (func $ensure (param $end i64) (result i32)
    (local $need i64)
    (if (i64.gt_u (local.get $end) (i64.const 0x100000000)) (then (return (i32.const 0))))
    (local.set $need
      (i64.sub
        (i64.shr_u (i64.add (local.get $end) (i64.const 65535)) (i64.const 16))
        (i64.extend_i32_u (memory.size))))
    (if (i64.gt_s (local.get $need) (i64.const 0))
      (then (if (i32.eq (memory.grow (i32.wrap_i64 (local.get $need))) (i32.const -1))
        (then (return (i32.const 0))))))
    (i32.const 1))

  ;; The host's chunk buffer lives at offset 1024.
  (func (export "alloc") (param $len i32) (result i32)
    (if (i32.eqz (call $ensure (i64.add (i64.const 1024) (i64.extend_i32_u (local.get $len)))))
      (then unreachable))
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
    (local $p i32) (local $end i32) (local $c i32) (local $newlines i32)
    (local $out i32) (local $o i32) (local $count i64) (local $mid i32)
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    ;; 1. Count '\n' to bound the output: every line start adds at most 20 digits + '\t'.
    (local.set $p (local.get $ptr))
    (block $counted
      (loop $count_nl
        (br_if $counted (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $newlines
          (i32.add (local.get $newlines) (i32.eq (i32.load8_u (local.get $p)) (i32.const 10))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $count_nl)))
    ;; 2. Scratch output region: 8-aligned, just past the input.
    (local.set $out (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (if (i32.eqz (call $ensure
          (i64.add (i64.extend_i32_u (local.get $out))
            (i64.add (i64.extend_i32_u (local.get $len))
              (i64.mul (i64.add (i64.extend_i32_u (local.get $newlines)) (i64.const 1)) (i64.const 21))))))
      (then
        (call $fail (i32.const 64) (i32.const 43))
        (return (i32.const 1))))
    ;; 3. Copy, inserting "<n>\t" at every line start.
    (local.set $count (i64.load (i32.const 0)))
    (local.set $mid (i32.load (i32.const 8)))
    (local.set $o (local.get $out))
    (local.set $p (local.get $ptr))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eqz (local.get $mid))
          (then
            (local.set $count (i64.add (local.get $count) (i64.const 1)))
            (local.set $o (call $utoa (local.get $count) (local.get $o)))
            (i32.store8 (local.get $o) (i32.const 9))
            (local.set $o (i32.add (local.get $o) (i32.const 1)))
            (local.set $mid (i32.const 1))))
        (local.set $c (i32.load8_u (local.get $p)))
        (i32.store8 (local.get $o) (local.get $c))
        (local.set $o (i32.add (local.get $o) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (if (i32.eq (local.get $c) (i32.const 10)) (then (local.set $mid (i32.const 0))))
        (br $copy)))
    (i64.store (i32.const 0) (local.get $count))
    (i32.store (i32.const 8) (local.get $mid))
    (if (i32.gt_u (local.get $o) (local.get $out))
      (then (call $emit (local.get $out) (i32.sub (local.get $o) (local.get $out)))))
    (i32.const 0))

  ;; Nothing to emit at the end (a final line without '\n' was already emitted); reset the state.
  (func (export "flush") (result i32)
    (i64.store (i32.const 0) (i64.const 0))
    (i32.store (i32.const 8) (i32.const 0))
    (i32.const 0))
)
