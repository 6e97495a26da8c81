//! The verification report, as `kura events verify` prints it.

use std::fmt;

use kura_store::events::{ChainBreak, ChainVerification};

/// The outcome of walking the log and its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport(pub ChainVerification);

impl From<ChainVerification> for VerifyReport {
    fn from(v: ChainVerification) -> Self {
        Self(v)
    }
}

impl VerifyReport {
    /// Whether the log verified end to end (the CLI exits non-zero if not).
    pub fn is_intact(&self) -> bool {
        self.0.is_intact()
    }

    /// The first break, if any.
    pub fn problem(&self) -> Option<&ChainBreak> {
        self.0.problem.as_ref()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.0;
        match &v.problem {
            None => write!(f, "OK: the security event log is intact")?,
            Some(p) => write!(f, "TAMPERED: {p}")?,
        }
        writeln!(f)?;
        match (v.first_seq, v.last_seq) {
            (Some(first), Some(last)) => writeln!(
                f,
                "  entries verified: {} (entries {first} to {last})",
                v.entries_checked
            )?,
            _ => writeln!(f, "  entries verified: {}", v.entries_checked)?,
        }
        if let Some(anchor) = v.anchor_seq {
            writeln!(
                f,
                "  pruned: entries up to {anchor} (anchored by a signed checkpoint)"
            )?;
        }
        writeln!(f, "  checkpoints: {}", v.checkpoints_checked)?;
        match v.last_signed {
            Some(s) => writeln!(f, "  last signed checkpoint verified: entry {s}")?,
            None => writeln!(f, "  last signed checkpoint verified: none")?,
        }
        if let Some(head) = v.head_hash {
            writeln!(f, "  head hash: {}", hex_lower(&head))?;
        }
        if let (None, Some(last), Some(signed)) = (&v.problem, v.last_seq, v.last_signed)
            && last > signed
        {
            writeln!(
                f,
                "  note: entries after {signed} are chained but not yet covered by a signed checkpoint"
            )?;
        }
        Ok(())
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_store::events::BreakKind;

    fn base() -> ChainVerification {
        ChainVerification {
            entries_checked: 12,
            first_seq: Some(1),
            last_seq: Some(12),
            head_hash: Some([0xab; 32]),
            anchor_seq: None,
            checkpoints_checked: 2,
            last_signed: Some(10),
            problem: None,
            stretches: 1,
        }
    }

    #[test]
    fn intact_and_broken_reports_read_well() {
        let ok = VerifyReport(base()).to_string();
        assert!(
            ok.starts_with("OK: the security event log is intact\n"),
            "{ok}"
        );
        assert!(
            ok.contains("entries verified: 12 (entries 1 to 12)"),
            "{ok}"
        );
        assert!(
            ok.contains("last signed checkpoint verified: entry 10"),
            "{ok}"
        );
        assert!(ok.contains("not yet covered"), "{ok}");
        assert!(ok.contains(&"ab".repeat(32)), "{ok}");

        let mut broken = base();
        broken.problem = Some(ChainBreak {
            seq: 7,
            kind: BreakKind::Missing {
                next_present: Some(8),
            },
        });
        let text = VerifyReport(broken).to_string();
        assert!(
            text.starts_with(
                "TAMPERED: entry 7 is missing (the log jumps to entry 8): entries were deleted\n"
            ),
            "{text}"
        );
        assert!(!text.contains("not yet covered"), "{text}");
    }
}
