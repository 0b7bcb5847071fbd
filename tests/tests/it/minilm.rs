//! The `minilm` family: the BERT encoder in tch computes what sentence-transformers computes
//! from the same MiniLM-L6 files, and the family trains end to end, fine-tuning the head and
//! optionally the top layers.

use std::io::Write;
use std::process::{Command, Stdio};

use ingest::source;
use tests::{TestEnv, corpus_dir, driftwood, minilm_dir, python, shuffle};
use trainer::minilm::MiniLm;
use trainer::schedule::Schedule;

/// Corpus texts of mixed lengths (some longer than the 256-token limit).
fn texts(n: usize) -> anyhow::Result<Vec<String>> {
    let mut corpus = source::corpus(&corpus_dir()?, source::CORPUS_PERIOD_1)?;
    shuffle(&mut corpus, 4);
    let mut out: Vec<String> =
        corpus.into_iter().take(n).map(|r| r.text.chars().take(3000).collect()).collect();
    out.push("hello world".into());
    out.push(String::new());
    Ok(out)
}

#[test]
fn encoder_matches_sentence_transformers() -> anyhow::Result<()> {
    let texts = texts(24)?;
    let mut child = Command::new(python()?)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/minilm_embed.py"))
        .arg(minilm_dir()?)
        .arg("256")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(serde_json::to_string(&texts)?.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "sentence-transformers failed");
    let reference: Vec<Vec<f32>> = serde_json::from_slice(&out.stdout)?;

    let model = MiniLm::pretrained(&minilm_dir()?, 2, 256)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = model.embeddings(&refs)?;
    let ours = &ours / ours.norm_scalaropt_dim(2, [1i64].as_slice(), true);
    let ours: Vec<f32> = Vec::try_from(ours.reshape([-1]))?;
    let dim = reference[0].len();
    assert_eq!((ours.len() / dim, dim), (texts.len(), 384));
    let max_diff = reference.iter().flatten().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("largest difference from sentence-transformers over {} texts: {max_diff:e}", texts.len());
    assert!(max_diff < 1e-4, "largest difference {max_diff}");
    Ok(())
}

#[test]
fn fine_tuning_the_top_layer_changes_only_it_and_the_head() -> anyhow::Result<()> {
    let texts = texts(40)?;
    let rows: Vec<(&str, i64)> =
        texts.iter().enumerate().map(|(i, t)| (t.as_str(), (i % 2) as i64)).collect();
    let before = MiniLm::pretrained(&minilm_dir()?, 2, 32)?;
    // Tensor name → raw bytes.
    let weights = |m: &MiniLm| -> anyhow::Result<std::collections::BTreeMap<String, Vec<u8>>> {
        let bytes = m.to_bytes()?;
        let file = safetensors::SafeTensors::deserialize(&bytes)?;
        Ok(file.tensors().into_iter().map(|(name, view)| (name, view.data().to_vec())).collect())
    };
    let start = weights(&before)?;
    let schedule =
        Schedule { epochs: 2, batch_size: 8, learning_rate: 1e-3, weight_decay: 0.0, seed: 3, patience: 5 };
    let (after, history) = before.fit(&schedule, 1, &rows[..30], &rows[30..])?;
    assert_eq!(history.len(), 2);
    let end = weights(&after)?;
    let changed: Vec<&String> = start.keys().filter(|k| start[*k] != end[*k]).collect();
    assert!(changed.iter().any(|k| k.starts_with("encoder.layer.5.")), "{changed:?}");
    assert!(changed.iter().any(|k| k.starts_with("classifier.")), "{changed:?}");
    assert!(
        changed.iter().all(|k| k.starts_with("encoder.layer.5.") || k.starts_with("classifier.")),
        "frozen weights moved: {changed:?}"
    );
    // The same seed gives the same weights.
    let again = MiniLm::pretrained(&minilm_dir()?, 2, 32)?;
    let (again, again_history) = again.fit(&schedule, 1, &rows[..30], &rows[30..])?;
    assert_eq!(history, again_history);
    let second = weights(&again)?;
    let differ: Vec<(&String, f32)> = end
        .keys()
        .filter(|k| end[*k] != second[*k])
        .map(|k| {
            let f = |b: &Vec<u8>| {
                b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))).collect::<Vec<_>>()
            };
            let d = f(&end[k]).iter().zip(f(&second[k])).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            (k, d)
        })
        .collect();
    assert!(differ.is_empty(), "two runs with one seed differ: {differ:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_trains_end_to_end_and_beats_the_majority_baseline() -> anyhow::Result<()> {
    let env = TestEnv::start("minilm")?;
    let mut config = env.config();
    config.train.model = schemas::Family::MiniLm;
    config.train.pretrained = minilm_dir()?.display().to_string();
    config.train.epochs = 40;
    config.train.batch_size = 32;
    config.train.learning_rate = 0.01;
    config.train.max_tokens = 64;
    let input = env.dir().join("texts.jsonl");
    tests::tokenizer_family_end_to_end(&config, 800, async |_, card| {
        assert_eq!(card.params["bert.layers"], "6");
        // Batch scoring through the CLI: JSON lines or plain JSON strings in, one line out per text.
        std::fs::write(
            &input,
            "{\"text\": \"WIN a FREE prize now!!! click here to claim your money\"}\n\"the meeting notes are attached\"\n\n",
        )?;
        let predict = ["models", "predict", "spam", "--input", input.to_str().unwrap_or_default()];
        let scored = driftwood(&config, &predict)?;
        let lines: Vec<serde_json::Value> = scored.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 2, "{scored}");
        assert!(
            lines.iter().all(|l| ["ham", "spam"].contains(&l["label"].as_str().unwrap_or_default())),
            "{scored}"
        );
        assert_eq!(lines[0]["probabilities"].as_array().map(Vec::len), Some(2));
        std::fs::write(&input, "{\"txt\": 1}\n")?;
        assert!(format!("{:#}", driftwood(&config, &predict).expect_err("refused")).contains("line 1"));
        Ok(())
    })
    .await
}
