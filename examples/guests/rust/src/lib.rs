//! linenum: numbers the lines of a text stream like `cat -n` (the number right-aligned in 6
//! columns, a tab, the line) and refuses binary input. A wasm-sandbox guest (ABI v1,
//! docs/abi.md) in Rust, the port of examples/guests/c/linenum.c: same output, same errors.
//!
//!   cargo build --release --target wasm32-unknown-unknown
//!   -> target/wasm32-unknown-unknown/release/linenum.wasm
//!
//! Chunks are arbitrary cuts of the input, so a line can start in one chunk and end in the next:
//! the state (line count, "at a line start") lives in a static, in linear memory, which the host
//! keeps between calls and captures in checkpoints. Use no crate that imports host functions
//! (wasm-bindgen, anything for a WASI target): the host refuses every import but sandbox.emit,
//! sandbox.fail and env.memory.

#[link(wasm_import_module = "sandbox")]
extern "C" {
    /// Outputs [ptr, ptr+len); the host copies it before returning.
    fn emit(ptr: *const u8, len: usize);
    /// Sets the error message of the call in progress (used if it returns non-zero).
    fn fail(ptr: *const u8, len: usize);
}

const OUT_SIZE: usize = 65536;
const MAX_PREFIX: usize = 21; // 20 digits of a u64 and the tab

struct State {
    line: u64,           // lines started so far
    at_line_start: bool, // the next byte starts a line
    input: Vec<u8>,      // the region handed to the host in alloc
    out: Vec<u8>,        // output buffer, reused for every chunk
}

static mut STATE: State = State { line: 0, at_line_start: true, input: Vec::new(), out: Vec::new() };

fn state() -> &'static mut State {
    // Safety: the host calls the guest on one thread and never re-entrantly (docs/abi.md), and no
    // two of these references are alive at once.
    unsafe { &mut *core::ptr::addr_of_mut!(STATE) }
}

fn error(status: i32, message: &str) -> i32 {
    unsafe { fail(message.as_ptr(), message.len()) };
    status
}

fn send(out: &[u8]) {
    unsafe { emit(out.as_ptr(), out.len()) };
}

/// "<n>" right-aligned in 6 columns, then a tab.
fn push_prefix(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut m = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    for _ in digits.len() - at..6 {
        out.push(b' ');
    }
    out.extend_from_slice(&digits[at..]);
    out.push(b'\t');
}

/// Called once before the first chunk, again only for a bigger chunk; the host never touches an
/// earlier region again, so replacing (and freeing) it is fine. Running out of memory here aborts,
/// which is a trap: the ABI's answer when alloc cannot provide the region.
#[no_mangle]
pub extern "C" fn alloc(len: usize) -> *mut u8 {
    let s = state();
    s.input = vec![0; len];
    s.input.as_mut_ptr()
}

#[no_mangle]
pub extern "C" fn process_chunk(ptr: *mut u8, len: usize) -> i32 {
    let s = state();
    let input = unsafe { core::slice::from_raw_parts(ptr as *const u8, len) };
    if s.out.capacity() < OUT_SIZE && s.out.try_reserve_exact(OUT_SIZE).is_err() {
        return error(3, "linenum: out of memory for the output buffer");
    }
    s.out.clear();
    for &c in input {
        if s.out.len() + MAX_PREFIX + 1 > OUT_SIZE {
            send(&s.out);
            s.out.clear();
        }
        if s.at_line_start {
            s.line += 1;
            push_prefix(&mut s.out, s.line);
            s.at_line_start = false;
        }
        if c == 0 {
            let message = format!("linenum: binary input (a NUL byte) on line {}", s.line);
            return error(2, &message);
        }
        s.out.push(c);
        if c == b'\n' {
            s.at_line_start = true;
        }
    }
    send(&s.out);
    0
}
