//! The benchmark's contact records: 8 mixed fields (text, number, date, flag,
//! long text, creation timestamp), the same for every target, generated from
//! the record's index so runs are repeatable.

/// One contact as the targets store it (the creation timestamp is set by the server).
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub age: u32,
    /// FileMaker's default date format, `MM/DD/YYYY`.
    pub born_us: String,
    /// ISO form for PocketBase.
    pub born_iso: String,
    pub active: bool,
    pub notes: String,
}

/// A small deterministic generator (SplitMix64), so no random crate is needed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Contact number `i`.
pub fn record(i: usize) -> Contact {
    let r = mix(i as u64);
    let pick = |shift: u32, n: u64| (r >> shift) % n;
    let year = 1950 + pick(0, 56);
    let month = 1 + pick(8, 12);
    let day = 1 + pick(16, 28);
    Contact {
        first_name: format!("Contact{i}"),
        last_name: format!("Family{}", pick(24, 500)),
        email: format!("contact{i}@example.com"),
        age: 18 + u32::try_from(pick(32, 63)).unwrap_or(0),
        born_us: format!("{month:02}/{day:02}/{year}"),
        born_iso: format!("{year}-{month:02}-{day:02} 12:00:00.000Z"),
        active: pick(40, 2) == 1,
        notes: "Lorem ipsum dolor sit amet ".repeat(1 + usize::try_from(pick(44, 6)).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_repeatable_and_varied() {
        assert_eq!(record(7), record(7));
        assert_ne!(record(7), record(8));
        let ages: std::collections::BTreeSet<u32> = (0..2000).map(|i| record(i).age).collect();
        assert_eq!(ages.first(), Some(&18));
        assert_eq!(ages.last(), Some(&80));
        let active = (0..2000).filter(|&i| record(i).active).count();
        assert!((800..1200).contains(&active), "{active} of 2000 active");
        assert!(
            record(3).born_us.len() == 10
                && record(3).born_iso.starts_with(&record(3).born_us[6..])
        );
    }
}
