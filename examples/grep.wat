;; grep: line filter. Emits only the lines that contain a fixed byte pattern (here "ERROR"),
;; one emit per matching line, including its trailing '\n' if it has one. The last line of a
;; chunk may lack '\n' and is matched too. An empty pattern matches every line. Stateless:
;; run it with the delimiter option so that chunks hold whole lines.
;; `node scripts/build-wasm.mjs --grep-pattern foo` rebuilds this module for another pattern
;; (it rewrites the block between the PATTERN markers).
;; Guest ABI v1: see docs/abi.md.
(module
  (import "sandbox" "emit" (func $emit (param i32 i32)))

  ;; PATTERN-BEGIN
  (memory (export "memory") 2)
  (global $pat_len i32 (i32.const 5))
  (global $heap_base i32 (i32.const 1024))
  (data (i32.const 64) "ERROR")
  ;; PATTERN-END

  ;; The pattern lives at offset 64, the host's chunk buffer at $heap_base.
  (func (export "alloc") (param $len i32) (result i32)
    (local $need i64)
    (local.set $need
      (i64.sub
        (i64.shr_u
          (i64.add (i64.add (i64.extend_i32_u (local.get $len)) (i64.extend_i32_u (global.get $heap_base)))
                   (i64.const 65535))
          (i64.const 16))
        (i64.extend_i32_u (memory.size))))
    (if (i64.gt_s (local.get $need) (i64.const 0))
      (then (if (i32.eq (memory.grow (i32.wrap_i64 (local.get $need))) (i32.const -1))
        (then unreachable))))
    (global.get $heap_base))

  ;; 1 if the pattern occurs in [$start, $end), else 0.
  (func $contains (param $start i32) (param $end i32) (result i32)
    (local $last i32) (local $k i32) (local $first i32)
    (if (i32.eqz (global.get $pat_len)) (then (return (i32.const 1))))
    (if (i32.lt_u (i32.sub (local.get $end) (local.get $start)) (global.get $pat_len))
      (then (return (i32.const 0))))
    ;; $last = last possible start position of a match
    (local.set $last (i32.sub (local.get $end) (global.get $pat_len)))
    (local.set $first (i32.load8_u (i32.const 64)))
    (block $not_found
      (loop $scan
        (br_if $not_found (i32.gt_u (local.get $start) (local.get $last)))
        (if (i32.eq (i32.load8_u (local.get $start)) (local.get $first))
          (then
            (local.set $k (i32.const 1))
            (block $mismatch
              (loop $cmp
                (if (i32.ge_u (local.get $k) (global.get $pat_len))
                  (then (return (i32.const 1))))
                (br_if $mismatch
                  (i32.ne (i32.load8_u (i32.add (local.get $start) (local.get $k)))
                          (i32.load8_u (i32.add (i32.const 64) (local.get $k)))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br $cmp)))))
        (local.set $start (i32.add (local.get $start) (i32.const 1)))
        (br $scan)))
    (i32.const 0))

  (func (export "process_chunk") (param $ptr i32) (param $len i32) (result i32)
    (local $p i32) (local $end i32) (local $line i32)
    (local.set $p (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (local.set $line (local.get $ptr))
    (block $done
      (loop $lines
        (br_if $done (i32.ge_u (local.get $line) (local.get $end)))
        ;; find the end of this line: $p = index of '\n' or $end
        (local.set $p (local.get $line))
        (block $eol
          (loop $find
            (br_if $eol (i32.ge_u (local.get $p) (local.get $end)))
            (br_if $eol (i32.eq (i32.load8_u (local.get $p)) (i32.const 10)))
            (local.set $p (i32.add (local.get $p) (i32.const 1)))
            (br $find)))
        ;; include the '\n' in the emitted line
        (if (i32.lt_u (local.get $p) (local.get $end))
          (then (local.set $p (i32.add (local.get $p) (i32.const 1)))))
        (if (call $contains (local.get $line) (local.get $p))
          (then (call $emit (local.get $line) (i32.sub (local.get $p) (local.get $line)))))
        (local.set $line (local.get $p))
        (br $lines)))
    (i32.const 0))
)
