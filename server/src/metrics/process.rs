//! The server process's own CPU time and resident memory, from `/proc/self` (Linux).

pub struct ProcessUsage {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// CPU time and resident memory now; None where `/proc` is missing.
pub fn usage() -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads configuration values.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if hz <= 0 || page <= 0 {
        return None;
    }
    Some(ProcessUsage {
        cpu_seconds: ticks as f64 / hz as f64,
        resident_bytes: resident_pages * page as u64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn usage_reads_proc() {
        let p = super::usage().expect("Linux /proc");
        assert!(p.resident_bytes > 1 << 20);
        assert!(p.cpu_seconds >= 0.0);
    }
}
