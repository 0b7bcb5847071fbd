use super::*;

/// Runs the default plan on `inputs` and compares with `expected` (`None` = dropped).
fn check(spec: CleanSpec, inputs: &[&str], expected: &[Option<&str>]) {
    let plan = CleanPlan::compile(spec).unwrap();
    let got = plan.clean_texts(inputs).unwrap();
    let got: Vec<Option<&str>> = got.iter().map(Option::as_deref).collect();
    assert_eq!(got, expected);
}

#[test]
fn golden_fixtures_of_the_default_plan() {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        input: String,
        expected: Option<String>,
    }
    let cases: Vec<Case> = include_str!("../../fixtures/clean_default.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(cases.len() >= 12);
    let plan = CleanPlan::compile(CleanSpec::default()).unwrap();
    let inputs: Vec<&str> = cases.iter().map(|c| c.input.as_str()).collect();
    let got = plan.clean_texts(&inputs).unwrap();
    for (case, got) in cases.iter().zip(got) {
        assert_eq!(got, case.expected, "case {}", case.name);
    }
}

#[test]
fn filters_and_truncation() {
    let spec = CleanSpec {
        version: SPEC_VERSION,
        steps: vec![
            Step::CollapseWhitespace,
            Step::MinLength { chars: 3 },
            Step::MaxLength { chars: 5, drop: true },
        ],
    };
    check(spec, &["ab", "  abc  ", "abcdef", "ééé"], &[None, Some("abc"), None, Some("ééé")]);
    let spec = CleanSpec {
        version: SPEC_VERSION,
        steps: vec![Step::MaxLength { chars: 2, drop: false }, Step::DropEmpty],
    };
    check(spec, &["abc", " "], &[Some("ab"), Some(" ")]);
}

#[test]
fn apply_keeps_all_rows_and_masks() {
    let plan = CleanPlan::compile(CleanSpec::default()).unwrap();
    let records: Vec<schemas::records::RawRecord> = ["Hello  WORLD", "<p> </p>"]
        .iter()
        .enumerate()
        .map(|(i, t)| schemas::records::RawRecord {
            id: format!("r{i}"),
            text: t.to_string(),
            label: Some("ham".into()),
            source: None,
            ts: None,
            meta: None,
        })
        .collect();
    let out = plan.apply(&ingest::batch::batch_of(&records)).unwrap();
    assert_eq!(out.batch.num_rows(), 2);
    assert_eq!(out.keep, BooleanArray::from(vec![true, false]));
    let kept = out.kept().unwrap();
    datafusion::assert_batches_eq!(
        [
            "+----+-------------+-------+--------+----+------+-----------------+--------------+",
            "| id | text        | label | source | ts | meta | kafka_partition | kafka_offset |",
            "+----+-------------+-------+--------+----+------+-----------------+--------------+",
            "| r0 | hello world | ham   |        |    |      | 0               | 0            |",
            "+----+-------------+-------+--------+----+------+-----------------+--------------+",
        ],
        &[kept]
    );
}

#[test]
fn spec_hash_is_canonical() {
    let a = CleanSpec::from_toml("version = 1\n[[steps]]\nop = \"lowercase\"\n").unwrap();
    let b = CleanSpec::from_toml("version=1\nsteps=[{op='lowercase'}]").unwrap();
    assert_eq!(a.hash(), b.hash());
    let c = CleanSpec::from_toml("version = 1\n[[steps]]\nop = \"nfkc\"\n").unwrap();
    assert_ne!(a.hash(), c.hash());
    let d = CleanSpec::default();
    assert_eq!(CleanSpec::from_toml(&d.to_toml()).unwrap(), d, "TOML round trip");
}

#[test]
fn bad_specs_are_refused() {
    for (toml, expected) in [
        ("version = 2\nsteps = []", "version 2"),
        ("version = 1\n[[steps]]\nop = \"shout\"\n", "shout"),
        ("version = 1\n[[steps]]\nop = \"min_length\"\n", "chars"),
        ("version = 1\n[[steps]]\nop = \"max_length\"\nchars = 0\n", "chars > 0"),
        ("version = 1\n[[steps]]\nop = \"replace_urls\"\ntoken = \"a b\"\n", "whitespace"),
    ] {
        let err = CleanSpec::from_toml(toml).unwrap_err().to_string();
        assert!(err.contains(expected), "{err} should contain {expected}");
    }
}
