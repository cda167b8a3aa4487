//! CPU time of processes, from /proc, to charge to the measured requests.

/// utime + stime of a process in microseconds (USER_HZ is 100 on Linux).
pub fn cpu_us(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; it ends at the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

pub fn cpu_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| cpu_us(&p.to_string())).sum()
}
