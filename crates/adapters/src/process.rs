//! This process as the holder of a lease and as a worker: a name unique across machines and
//! containers, and whether the process a name names is known to be gone.
//!
//! A PID means something only inside one PID namespace of one running kernel, and host names
//! are not unique: containers run with `--network host` share the machine's name while each
//! has its own PIDs (each worker PID 1), and cloned virtual machines share a name too. So the
//! name is `HOST/SCOPE:PID`, where SCOPE is eight hex digits of a hash of the kernel's
//! `boot_id` and the inode of this process's PID namespace: two processes have one SCOPE
//! exactly when their PIDs are numbers of the same table. A holder is looked up with kill(2)
//! only then; any other holder is gone only when its lease has expired.

use std::sync::OnceLock;

/// `HOST/SCOPE:PID`, or `HOST:PID` where /proc does not say the scope.
pub fn name() -> String {
    match scope() {
        Some(scope) => format!("{}/{scope}:{}", host_name(), std::process::id()),
        None => format!("{}:{}", host_name(), std::process::id()),
    }
}

/// Whether the process `holder` names (a [`name`] of this or another process) is known to be
/// gone: it ran in this PID namespace of this kernel, and no process has its PID now.
pub fn is_gone(holder: &str) -> bool {
    let Some((host_scope, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    let Some((host, scope)) = host_scope.rsplit_once('/') else {
        // A name without a scope (an older mailferry's) could be of another namespace.
        return false;
    };
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return false;
    };
    if pid <= 0 || host != host_name() || Some(scope) != self::scope() {
        return false;
    }
    // Signal 0 checks that the process exists without touching it (kill(2)); ESRCH means it
    // does not. EPERM means it exists under another user: not gone.
    // SAFETY: kill with signal 0 sends nothing and has no memory effects.
    let r = unsafe { libc::kill(pid, 0) };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The PID table this process's PID is a number of: a hash of the kernel's boot and of the PID
/// namespace, read once (neither changes while the process runs).
pub fn scope() -> Option<&'static str> {
    static SCOPE: OnceLock<Option<String>> = OnceLock::new();
    SCOPE
        .get_or_init(|| {
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
            Some(scope_of(boot.trim(), &ns.to_string_lossy()))
        })
        .as_deref()
}

fn scope_of(boot_id: &str, pid_namespace: &str) -> String {
    // FNV-1a, 64 bits, folded to 32: a label, not a secret.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in boot_id.bytes().chain([0]).chain(pid_namespace.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", (h ^ (h >> 32)) as u32)
}

/// This machine's host name (as its UTS namespace has it).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_carries_host_scope_and_pid() {
        let n = name();
        let scope = scope().expect("Linux has /proc/sys/kernel/random/boot_id");
        assert_eq!(n, format!("{}/{scope}:{}", host_name(), std::process::id()));
        assert_eq!(scope.len(), 8);
    }

    #[test]
    fn only_a_holder_of_this_pid_namespace_is_looked_up() {
        // A child that has exited and been reaped: its PID is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let scope = scope().unwrap();
        let host = host_name();
        assert!(is_gone(&format!("{host}/{scope}:{pid}")));
        assert!(!is_gone(&name()), "this process is alive");
        // The same PID of another namespace, another machine, or an older mailferry's name:
        // nothing here says whether that process lives.
        assert!(!is_gone(&format!("{host}/ffffffff:{pid}")));
        assert!(!is_gone(&format!("elsewhere/{scope}:{pid}")));
        assert!(!is_gone(&format!("{host}:{pid}")));
        assert!(!is_gone("garbage"));
        assert!(!is_gone(&format!("{host}/{scope}:0")));
    }

    #[test]
    fn the_scope_differs_by_boot_and_by_namespace() {
        let a = scope_of("0f5e5a5e-1111-4a4a-8b8b-000000000001", "pid:[4026531836]");
        assert_ne!(
            a,
            scope_of("0f5e5a5e-1111-4a4a-8b8b-000000000002", "pid:[4026531836]")
        );
        assert_ne!(
            a,
            scope_of("0f5e5a5e-1111-4a4a-8b8b-000000000001", "pid:[4026532201]")
        );
        assert_eq!(
            a,
            scope_of("0f5e5a5e-1111-4a4a-8b8b-000000000001", "pid:[4026531836]")
        );
    }
}
