//! Readers of `/proc`: a process's command line, its thread group, whether it is alive, and the
//! capabilities of futexscope itself.

use std::fs;

/// A process's command line, its arguments joined by spaces; `None` once it has exited.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<_> = raw
        .split(|&byte| byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

/// A line `NAME:\tVALUE` of `/proc/PID/status` (`self` for this process), trimmed.
fn status_field(pid: &str, name: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}

/// The process (thread group) of thread or process `id`, if it exists and has not exited.
pub fn process_of(id: u32) -> Option<u32> {
    let tgid = status_field(&id.to_string(), "Tgid")?.parse().ok()?;
    process_alive(tgid).then_some(tgid)
}

/// Whether process `pid` exists and is not a zombie (a zombie keeps its `/proc` entry).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => false,
    }
}

/// The parent of process `pid`, from `/proc/PID/stat`; `None` once it has exited.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE PPID …`: the command may hold spaces and parentheses, so split after
    // its last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The processes descended from `pid` (children, their children, …) that run now, by pid.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| Some((child, parent_of(child)?)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|&&(_, p)| p == parent) {
            if child != pid && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found.sort_unstable();
    found
}

/// Linux capability numbers futexscope checks.
pub mod capability {
    /// CAP_SYS_ADMIN.
    pub const SYS_ADMIN: u32 = 21;
    /// CAP_PERFMON.
    pub const PERFMON: u32 = 38;
    /// CAP_BPF.
    pub const BPF: u32 = 39;
}

/// The effective capabilities of this process, as a bit set; `None` if unreadable.
pub fn effective_capabilities() -> Option<u64> {
    u64::from_str_radix(&status_field("self", "CapEff")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_its_own_thread_group() {
        let pid = std::process::id();
        assert!(process_alive(pid));
        assert_eq!(process_of(pid), Some(pid));
        assert!(command_line(pid).is_some_and(|line| !line.is_empty()));
        assert!(effective_capabilities().is_some());
    }

    #[test]
    fn descendants_are_children_and_grandchildren() {
        // A shell that starts a sleeping grandchild and waits for it.
        let mut shell = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start sh");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.take().expect("piped")),
            &mut line,
        )
        .expect("read the sleep's pid");
        let sleep: u32 = line.trim().parse().expect("a pid");
        let found = descendants(std::process::id());
        let _ = std::process::Command::new("kill")
            .arg(sleep.to_string())
            .status();
        let _ = shell.wait();
        assert!(found.contains(&shell.id()), "the shell in {found:?}");
        assert!(found.contains(&sleep), "the shell's sleep in {found:?}");
        assert_eq!(parent_of(sleep), None, "the sleep has exited");
    }

    #[test]
    fn a_pid_that_cannot_exist_is_not_alive() {
        // Above the kernel's PID_MAX_LIMIT (4 Mi).
        let pid = 1 << 23;
        assert!(!process_alive(pid));
        assert_eq!((process_of(pid), command_line(pid)), (None, None));
    }
}
