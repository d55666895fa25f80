use std::collections::BTreeSet;

use confab_proto::ErrorCode;

/// Every number in the first column of the seed's tables.
fn seed_codes() -> BTreeSet<u32> {
    let path = crate::data_dir().join("zim-1x-error-codes.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the seed error table at {}: {e}",
            path.display()
        )
    });
    text.lines()
        .filter_map(|line| {
            let first = line.trim().strip_prefix('|')?.split('|').next()?.trim();
            first.parse::<u32>().ok()
        })
        .collect()
}

#[test]
fn error_codes_are_exactly_the_seed_table() {
    let seed = seed_codes();
    assert_eq!(
        seed.len(),
        28,
        "the seed table should hold 28 codes: {seed:?}"
    );
    let ours: BTreeSet<u32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(ours, seed);
}

#[test]
fn names_are_unique() {
    let names: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(names.len(), ErrorCode::ALL.len());
}
