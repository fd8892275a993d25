//! Starting a command whose pid is known before it runs a single instruction of its own, so
//! that it can be added to the traced set first (std's `Command::spawn` returns only after
//! `exec`, too late).

use std::{
    ffi::{CString, NulError},
    io,
    os::fd::{AsRawFd, OwnedFd},
};

/// A child that has forked and waits at the gate, before `exec`.
pub struct GatedChild {
    pid: libc::pid_t,
    gate: OwnedFd,
    exec_error: OwnedFd,
}

/// Why a command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// An argument contains a NUL byte.
    #[error("an argument of the command contains a NUL byte")]
    Nul(#[from] NulError),
    /// No command was given.
    #[error("no command given")]
    Empty,
    /// fork or pipe failed.
    #[error("cannot fork")]
    Fork(#[source] io::Error),
    /// exec failed in the child (not found, not executable…).
    #[error("cannot execute `{command}`")]
    Exec {
        /// The program.
        command: String,
        /// The errno exec returned.
        #[source]
        source: io::Error,
    },
}

impl GatedChild {
    /// Forks; the child waits at the gate, then execs `argv` (searched in `PATH`).
    pub fn spawn(argv: &[String]) -> Result<GatedChild, SpawnError> {
        let program = argv.first().ok_or(SpawnError::Empty)?;
        let args = argv
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let _ = program;
        let (gate_read, gate_write) = pipe()?;
        let (error_read, error_write) = pipe()?;
        // SAFETY: fork has no preconditions; in the child we call only async-signal-safe
        // functions (read, execvp, write, _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(SpawnError::Fork(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls only; the pointers stay valid (copied address
            // space); `_exit` never returns.
            unsafe {
                let mut byte = 0u8;
                libc::read(gate_read.as_raw_fd(), (&raw mut byte).cast(), 1);
                libc::execvp(arg_ptrs[0], arg_ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(error_write.as_raw_fd(), (&raw const errno).cast(), 4);
                libc::_exit(127);
            }
        }
        drop(gate_read);
        drop(error_write);
        Ok(GatedChild {
            pid,
            gate: gate_write,
            exec_error: error_read,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Opens the gate: the child execs. Fails if exec fails.
    pub fn start(self, command: &str) -> Result<libc::pid_t, SpawnError> {
        // SAFETY: writing one byte from a live local to an owned pipe fd.
        unsafe { libc::write(self.gate.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        drop(self.gate);
        let mut errno = 0i32;
        // SAFETY: reading at most 4 bytes into a live local i32 from an owned fd. The pipe is
        // close-on-exec, so a successful exec yields EOF (0 bytes).
        let n = unsafe { libc::read(self.exec_error.as_raw_fd(), (&raw mut errno).cast(), 4) };
        if n == 4 {
            let mut status = 0;
            // SAFETY: reaping our own child, which has exited.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
            return Err(SpawnError::Exec {
                command: command.to_owned(),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        Ok(self.pid)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SpawnError::Fork(io::Error::last_os_error()));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits for `pid` and returns its wait status.
pub fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// How our child `pid` ended, if it has (it is then reaped); never blocks.
pub fn try_exit(pid: libc::pid_t) -> Option<Exit> {
    let mut status = 0;
    // SAFETY: non-blocking wait for our own child with a valid status pointer.
    let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if ret != pid {
        return None;
    }
    Some(if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    })
}

/// Stops our child `pid` with `signal` (SIGKILL if it is still there after 2 s) and reaps it.
pub fn stop(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: signalling our own child, not yet reaped, so the pid is still ours.
    unsafe { libc::kill(pid, signal) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while try_exit(pid).is_none() {
        if std::time::Instant::now() >= deadline {
            // SAFETY: as above; then a blocking reap of our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
