//! USDT markers (stapsdt notes, provider `futexscope`) placed around the semaphore's futex
//! calls. The table of names and arguments is `futexscope_probes_common::markers`, and
//! `docs/markers.md` describes it for people.
//!
//! Each marker is one instruction in the instruction stream plus a record in the non-allocated
//! `.note.stapsdt` section naming the instruction's address and the registers that hold the
//! arguments (`8@%rdi`-style on x86_64, `8@x0`-style on aarch64). Most markers are a `nop` of
//! their own; on x86_64 three of the futex markers sit on instructions the system call needs
//! anyway (see `futex.rs`). There is no SDT semaphore (its address is 0), so a tracer that only
//! attaches a uprobe (bpftrace, perf, futexscope) sees every hit, and an untraced process pays
//! for the `nop`s and for getting the arguments into registers, nothing more. Every argument is
//! widened to 8 bytes; `-8@` marks a signed one.
//!
//! Without the `markers` feature (or on other architectures) every marker compiles to nothing.
#![cfg_attr(
    any(feature = "portable", not(target_os = "linux")),
    expect(
        dead_code,
        reason = "the portable semaphore makes no futex calls to mark"
    )
)]

/// Emits one futexscope marker: a `nop` and its `.note.stapsdt` record.
///
/// `$spec` is the stapsdt argument spec with `{0}`, `{1}`… standing for the argument
/// registers; each `$arg` must be a `u64` or `i64`.
#[cfg(all(feature = "markers", target_arch = "x86_64"))]
macro_rules! marker {
    ($name:literal, $spec:literal $(, $arg:expr)* $(,)?) => {
        // SAFETY: the asm executes one `nop`, which reads and writes nothing; everything else
        // only assembles data into the `.note.stapsdt` and `.stapsdt.base` sections. The
        // argument operands are inputs the asm never touches.
        unsafe {
            core::arch::asm!(
                stapsdt_note_asm!($name, $spec),
                $(in(reg) $arg,)*
                options(att_syntax, nomem, nostack, preserves_flags),
            )
        }
    };
}

/// Emits one futexscope marker: a `nop` and its `.note.stapsdt` record (aarch64 registers).
#[cfg(all(feature = "markers", target_arch = "aarch64"))]
macro_rules! marker {
    ($name:literal, $spec:literal $(, $arg:expr)* $(,)?) => {
        // SAFETY: the asm executes one `nop`, which reads and writes nothing; everything else
        // only assembles data into the `.note.stapsdt` and `.stapsdt.base` sections. The
        // argument operands are inputs the asm never touches.
        unsafe {
            core::arch::asm!(
                stapsdt_note_asm!($name, $spec),
                $(in(reg) $arg,)*
                options(nomem, nostack, preserves_flags),
            )
        }
    };
}

/// Markers compiled out: the arguments are still evaluated (they are plain values), and
/// nothing is emitted.
#[cfg(not(all(
    feature = "markers",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
macro_rules! marker {
    ($name:literal, $spec:literal $(, $arg:expr)* $(,)?) => {
        $(let _ = $arg;)*
    };
}

/// The assembly of one stapsdt (version 3) marker: a `nop` and its note (see
/// [`stapsdt_note_on`]).
#[cfg(all(
    feature = "markers",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
macro_rules! stapsdt_note_asm {
    ($name:literal, $spec:literal) => {
        $crate::markers::stapsdt_note_on!("nop", $name, $spec)
    };
}

/// The assembly of one stapsdt (version 3) marker placed on `$instruction`: the instruction at
/// label 990, then an ELF note (owner `stapsdt`, type 3) holding its address, the address of
/// `_.stapsdt.base`, a semaphore address of 0, and the provider, name and argument spec
/// strings. An empty `$instruction` puts the marker on whatever instruction comes next.
///
/// A tracer's uprobe fires before the instruction runs, so the marker is free when nobody
/// traces if the instruction is one the code executes anyway; otherwise it is a `nop`.
///
/// The note's section is linked to the section of the code it marks (the `o` flag,
/// `SHF_LINK_ORDER`), so a linker that drops the code (`--gc-sections` dropping a function
/// nothing calls, or a copy of it that was inlined everywhere) drops the note with it. Without
/// the link the note would stay (`.note.stapsdt` is not allocated, and linkers keep such
/// sections whole) and record an address that is no address: lld writes the marker's offset
/// within the dropped function (`0x13`), GNU ld writes 0. An assembler link needs a symbol in
/// the code's section that no other marker uses, even when the compiler copies this asm into
/// several functions of one assembly unit: a counter symbol and an `.altmacro` expansion name
/// one label per note.
///
/// The first note of a code unit also defines `_.stapsdt.base` in its own COMDAT section,
/// which tracers use to undo prelink-style relocation. `.stapsdt.base` is flagged `R`
/// (retained) so `--gc-sections` keeps it although only the non-allocated notes refer to it,
/// and `x` so the linker puts it in the executable segment next to the markers: perf turns a
/// note's address into a file offset with the address-to-offset shift of `.stapsdt.base`,
/// which is right only if both lie in the same segment (lld, Rust's default linker, gives
/// each segment its own shift).
#[cfg(all(
    feature = "markers",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
macro_rules! stapsdt_note_on {
    ($instruction:literal, $name:literal, $spec:literal) => {
        concat!(
            "990: ",
            $instruction,
            "\n",
            // The note's section is linked (SHF_LINK_ORDER) to the code's section through a
            // label with a name of its own: `.Lfutexscope_sites` counts the notes of this
            // assembly unit, and `.altmacro`'s `%` turns the count into the label's name.
            ".ifndef .Lfutexscope_sites\n",
            ".set .Lfutexscope_sites, 0\n",
            ".endif\n",
            ".set .Lfutexscope_sites, .Lfutexscope_sites + 1\n",
            ".altmacro\n",
            ".macro futexscope_note_section site\n",
            ".Lfutexscope_site_\\site:\n",
            ".pushsection .note.stapsdt, \"o\", \"note\", .Lfutexscope_site_\\site\n",
            ".endm\n",
            "futexscope_note_section %.Lfutexscope_sites\n",
            ".purgem futexscope_note_section\n",
            ".noaltmacro\n",
            ".balign 4\n",
            ".4byte 992f-991f, 994f-993f, 3\n",
            "991: .asciz \"stapsdt\"\n",
            "992: .balign 4\n",
            "993: .8byte 990b\n",
            ".8byte _.stapsdt.base\n",
            ".8byte 0\n",
            ".asciz \"futexscope\"\n",
            ".asciz \"",
            $name,
            "\"\n",
            ".asciz \"",
            $spec,
            "\"\n",
            "994: .balign 4\n",
            ".popsection\n",
            ".ifndef _.stapsdt.base\n",
            ".pushsection .stapsdt.base, \"axGR\", \"progbits\", .stapsdt.base, comdat\n",
            ".weak _.stapsdt.base\n",
            ".hidden _.stapsdt.base\n",
            "_.stapsdt.base: .space 1\n",
            ".size _.stapsdt.base, 1\n",
            ".popsection\n",
            ".endif",
        )
    };
}
/// For the `wait_begin` `nop` in the futex system call's own asm block on x86_64 (`futex.rs`;
/// the other three futex markers there sit on the call's own instructions).
#[cfg(all(
    feature = "markers",
    target_arch = "x86_64",
    target_os = "linux",
    not(feature = "portable"),
    not(loom)
))]
pub(crate) use stapsdt_note_asm;
#[cfg(all(
    feature = "markers",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(crate) use stapsdt_note_on;

/// Before a futex wait. `deadline_ns` is absolute CLOCK_MONOTONIC, 0 = none. (On x86_64 the
/// four futex markers live in the asm block of the system call itself: see `futex.rs`.)
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn wait_begin(
    sem: u64,
    word: u64,
    expected: u64,
    wanted: u64,
    deadline_ns: u64,
    state: u64,
) {
    marker!(
        "wait_begin",
        "8@{0} 8@{1} 8@{2} 8@{3} 8@{4} 8@{5}",
        sem,
        word,
        expected,
        wanted,
        deadline_ns,
        state,
    );
}

/// After a futex wait. `result`: 0 = woken, else -errno.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn wait_end(sem: u64, word: u64, result: i64, wanted: u64) {
    marker!(
        "wait_end",
        "8@{0} 8@{1} -8@{2} 8@{3}",
        sem,
        word,
        result,
        wanted
    );
}

/// Before a futex wake of `count` threads.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn wake_begin(sem: u64, word: u64, count: u64, waiters: u64) {
    marker!(
        "wake_begin",
        "8@{0} 8@{1} 8@{2} 8@{3}",
        sem,
        word,
        count,
        waiters
    );
}

/// After a futex wake. `result`: threads woken, or -errno.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn wake_end(sem: u64, word: u64, result: i64, count: u64) {
    marker!(
        "wake_end",
        "8@{0} 8@{1} -8@{2} 8@{3}",
        sem,
        word,
        result,
        count
    );
}

/// Tokens obtained by an acquire that had to wait.
#[inline(always)]
pub(crate) fn acquired(sem: usize, tokens: u32) {
    marker!("acquired", "8@{0} 8@{1}", sem as u64, u64::from(tokens));
}

/// A timed acquire gave up at its deadline.
#[inline(always)]
pub(crate) fn timed_out(sem: usize, wanted: u32, deadline_ns: u64, now_ns: u64) {
    marker!(
        "timed_out",
        "8@{0} 8@{1} 8@{2} 8@{3}",
        sem as u64,
        u64::from(wanted),
        deadline_ns,
        now_ns,
    );
}
