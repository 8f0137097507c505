;; wc: stateful word count. Counts lines ('\n' bytes), words (maximal runs of bytes that are not
;; ASCII whitespace: space, \t, \n, \v, \f, \r; a word may span chunks) and bytes over the whole
;; stream, as unsigned 64-bit integers. process_chunk emits nothing; flush emits exactly one line
;; "<lines> <words> <bytes>\n" and then resets the counters.
;; State lives in linear memory: [0] lines i64, [8] words i64, [16] bytes i64, [24] in_word i32.
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
    (local $p i32) (local $end i32) (local $c i32)
    (local $lines i64) (local $words i64) (local $in_word i32) (local $not_ws i32)
    (local.set $lines (i64.load (i32.const 0)))
    (local.set $words (i64.load (i32.const 8)))
    (local.set $in_word (i32.load (i32.const 24)))
    (i64.store (i32.const 16) (i64.add (i64.load (i32.const 16)) (i64.extend_i32_u (local.get $len))))
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $bytes
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (local.set $lines (i64.add (local.get $lines) (i64.extend_i32_u (i32.eq (local.get $c) (i32.const 10)))))
        ;; whitespace: ' ' or 9..13 (\t \n \v \f \r)
        (local.set $not_ws
          (i32.eqz (i32.or (i32.eq (local.get $c) (i32.const 32))
                           (i32.lt_u (i32.sub (local.get $c) (i32.const 9)) (i32.const 5)))))
        ;; a word starts at a non-whitespace byte that is not already inside a word
        (local.set $words
          (i64.add (local.get $words)
            (i64.extend_i32_u (i32.and (local.get $not_ws) (i32.eqz (local.get $in_word))))))
        (local.set $in_word (local.get $not_ws))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $bytes)))
    (i64.store (i32.const 0) (local.get $lines))
    (i64.store (i32.const 8) (local.get $words))
    (i32.store (i32.const 24) (local.get $in_word))
    (i32.const 0))

  (func (export "flush") (result i32)
    (local $p i32)
    (local.set $p (call $utoa (i64.load (i32.const 0)) (i32.const 128)))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $utoa (i64.load (i32.const 8)) (i32.add (local.get $p) (i32.const 1))))
    (i32.store8 (local.get $p) (i32.const 32))
    (local.set $p (call $utoa (i64.load (i32.const 16)) (i32.add (local.get $p) (i32.const 1))))
    (i32.store8 (local.get $p) (i32.const 10))
    (call $emit (i32.const 128) (i32.sub (i32.add (local.get $p) (i32.const 1)) (i32.const 128)))
    ;; reset, so the instance could count another stream
    (i64.store (i32.const 0) (i64.const 0))
    (i64.store (i32.const 8) (i64.const 0))
    (i64.store (i32.const 16) (i64.const 0))
    (i32.store (i32.const 24) (i32.const 0))
    (i32.const 0))
)
