use super::*;
use arrow::array::StringArray;

/// Runs the default plan on `inputs` and compares with `expected` (`None` = dropped).
fn check(spec: CleanSpec, inputs: &[&str], expected: &[Option<&str>]) {
    let plan = CleanPlan::compile(spec).unwrap();
    let got = plan.clean_texts(inputs);
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
    let got = plan.clean_texts(&inputs);
    for (case, got) in cases.iter().zip(got) {
        assert_eq!(got, case.expected, "case {}", case.name);
    }
}

#[test]
fn the_two_default_specs_on_texts_that_start_like_headers() {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        input: String,
        first_default: Option<String>,
        default: Option<String>,
    }
    let cases: Vec<Case> = include_str!("../../fixtures/clean_headers.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(cases.len() >= 10);
    let first = CleanPlan::compile(CleanSpec::first_default()).unwrap();
    let second = CleanPlan::compile(CleanSpec::default()).unwrap();
    for case in &cases {
        let [a, b] = [&first, &second].map(|p| p.clean_texts(&[&case.input]).remove(0));
        assert_eq!(a, case.first_default, "first default, case {}", case.name);
        assert_eq!(b, case.default, "default, case {}", case.name);
        assert_eq!(applied(&second, &[&case.input]).remove(0), b, "batch path, case {}", case.name);
    }
}

#[test]
fn the_first_default_spec_keeps_its_hash() {
    // The hash every dataset and model card cleaned with the first default records: a change
    // here would make them unreadable with the spec they were written with.
    assert_eq!(
        CleanSpec::first_default().hash(),
        "a8435430f0d8b16a36b6c73b226f7f52f44f7eb872fca1721ab64efb8a893f24"
    );
    assert_ne!(CleanSpec::default().hash(), CleanSpec::first_default().hash());
    let toml = CleanSpec::first_default().to_toml();
    assert!(toml.contains("strip_email_headers"), "{toml}");
    assert_eq!(CleanSpec::from_toml(&toml).unwrap().hash(), CleanSpec::first_default().hash());
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

/// The batch path: `apply` on a batch of `texts`, `None` where the filters drop a row.
fn applied(plan: &CleanPlan, texts: &[&str]) -> Vec<Option<String>> {
    let records: Vec<schemas::records::RawRecord> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| schemas::records::RawRecord {
            id: i.to_string(),
            text: t.to_string(),
            label: None,
            source: None,
            ts: None,
            meta: None,
        })
        .collect();
    let out = plan.apply(&ingest::batch::batch_of(&records)).unwrap();
    let text = out.batch.column(plan.text_index).as_any().downcast_ref::<StringArray>().unwrap();
    (0..text.len()).map(|i| out.keep.value(i).then(|| text.value(i).to_string())).collect()
}

#[test]
fn clean_texts_gives_what_apply_gives() {
    let mut texts: Vec<String> = include_str!("../../fixtures/clean_default.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["input"].as_str().unwrap().to_string())
        .collect();
    let pieces = [
        "From a@b.c  Mon\n",
        "Subject: Hi THERE\n",
        "X-Spam: yes\n\n",
        "\r\n\r\n",
        "<p>",
        "&amp;",
        "Ünïcödé ",
        "ﬁ",
        "\u{200B}",
        "\0",
        " ",
        "\t\n",
        "word ",
        "http://x.org/a ",
        "jo@ex.com ",
        "1,234 ",
        "é",
        "",
    ];
    texts.extend(text::tests::mixed_texts(&pieces, 0x9e37_79b9_7f4a_7c15, 3000));
    if let Ok(dir) = std::env::var("DRIFTWOOD_CORPUS_DIR") {
        use ingest::source::{CORPUS_PERIOD_1, CORPUS_PERIOD_2, corpus};
        let groups: Vec<&str> = CORPUS_PERIOD_1.iter().chain(CORPUS_PERIOD_2).copied().collect();
        let records = corpus(std::path::Path::new(&dir), &groups).unwrap();
        assert!(records.len() > 5000, "{} corpus texts", records.len());
        texts.extend(records.into_iter().step_by(4).map(|r| r.text));
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let specs = [
        CleanSpec::default(),
        CleanSpec {
            version: SPEC_VERSION,
            steps: vec![
                Step::StripHtml,
                Step::CollapseWhitespace,
                Step::MinLength { chars: 3 },
                Step::MaxLength { chars: 20, drop: true },
                Step::DropEmpty,
            ],
        },
        CleanSpec {
            version: SPEC_VERSION,
            steps: vec![Step::MaxLength { chars: 4, drop: false }, Step::DropEmpty],
        },
        CleanSpec { version: SPEC_VERSION, steps: vec![] },
    ];
    for spec in specs {
        let plan = CleanPlan::compile(spec.clone()).unwrap();
        let (direct, batch) = (plan.clean_texts(&texts), applied(&plan, &texts));
        assert_eq!(direct.len(), texts.len());
        for ((text, d), b) in texts.iter().zip(&direct).zip(&batch) {
            assert_eq!(d, b, "spec {spec:?}, text {text:?}");
        }
        let (kept, dropped) =
            (direct.iter().flatten().count(), direct.iter().filter(|d| d.is_none()).count());
        assert!(kept > 0, "spec {spec:?} keeps some texts");
        if !spec.steps.is_empty() {
            assert!(dropped > 0, "spec {spec:?} drops some texts");
        }
    }
}
