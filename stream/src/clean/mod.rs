//! The cleaning plan: a declarative, versioned spec compiled once into DataFusion physical
//! expressions and run on RecordBatches.
//!
//! ```text
//!  CleanSpec (TOML) ──compile──► text expr:  step_n(...step_1(col("text")))   (UDFs / builtins)
//!                                keep expr:  character_length(text) >= min AND ...
//!  RecordBatch(raw) ──apply───► CleanOutput { batch: same schema, text cleaned; keep: mask }
//! ```
//!
//! The snapshot job and the online scorer call the same [`CleanPlan::apply`]; single texts (REST
//! requests) take [`CleanPlan::clean_texts`], which runs the same step functions in order without
//! building a batch and applies the same filters. The spec's
//! canonical hash ([`CleanPlan::hash`]) is stored in every manifest and model card so a model
//! can only be served with the cleaning it was trained on.

pub mod text;
mod udf;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::DFSchema;
use datafusion::logical_expr::{Expr, ScalarUDF, col, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use schemas::records::{clean_schema, col as c};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use udf::{TextOp, TextUdf};

/// Format version of cleaning specs.
pub const SPEC_VERSION: u32 = 1;

/// A cleaning spec: an ordered list of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CleanSpec {
    pub version: u32,
    pub steps: Vec<Step>,
}

/// One step. Text steps rewrite `text` in order; filter steps (`min_length`, `max_length` with
/// `drop`, `drop_empty`) are evaluated on the cleaned text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Remove the block before the first blank line when the text starts like an e-mail
    /// (`From ` or any `Word: `), keeping the values of the listed headers. The first default
    /// spec's step: it also eats the first paragraph of `Note: …` or `Re: …`; kept so the
    /// datasets cleaned with it keep their meaning ([`text::strip_email_headers`]).
    StripEmailHeaders {
        #[serde(default)]
        keep: Vec<String>,
    },
    /// Remove an e-mail's header block only when the text starts with a real RFC 5322 one,
    /// keeping the values of the listed headers ([`text::strip_message_headers`]).
    StripMessageHeaders {
        #[serde(default)]
        keep: Vec<String>,
    },
    /// Remove HTML tags, comments, scripts and styles; decode entities.
    StripHtml,
    /// Unicode NFKC normalization.
    Nfkc,
    Lowercase,
    ReplaceUrls {
        #[serde(default = "default_url_token")]
        token: String,
    },
    ReplaceEmails {
        #[serde(default = "default_email_token")]
        token: String,
    },
    ReplaceNumbers {
        #[serde(default = "default_number_token")]
        token: String,
    },
    /// Remove control and invisible format characters.
    StripControl,
    /// Collapse whitespace runs into one space and trim.
    CollapseWhitespace,
    /// Drop records shorter than `chars` characters.
    MinLength {
        chars: usize,
    },
    /// Records longer than `chars` characters are truncated, or dropped with `drop = true`.
    MaxLength {
        chars: usize,
        #[serde(default)]
        drop: bool,
    },
    /// Drop records whose cleaned text is empty.
    DropEmpty,
    /// Keep only the first record of each cleaned text (by a 64-bit content hash) in a
    /// dataset. Stateful, so applied by the snapshot job across batches and restarts; the
    /// online scorer still scores every record.
    Dedupe,
}

fn default_url_token() -> String {
    "<url>".into()
}
fn default_email_token() -> String {
    "<email>".into()
}
fn default_number_token() -> String {
    "<num>".into()
}

impl Default for CleanSpec {
    /// The built-in spec: e-mail aware (a real header block goes, its Subject stays), tokens for
    /// URLs/addresses/numbers, lowercase. The second default: [`CleanSpec::first_default`] was
    /// the same with `strip_email_headers`.
    fn default() -> Self {
        CleanSpec::default_with(Step::StripMessageHeaders { keep: vec!["subject".into()] })
    }
}

impl CleanSpec {
    /// The default spec of the first releases, whose header step strips the first paragraph of
    /// any text starting with `Word: `. Datasets cleaned with it keep being readable and
    /// writable with a spec file holding it (`driftwood spec --first-default`).
    pub fn first_default() -> Self {
        CleanSpec::default_with(Step::StripEmailHeaders { keep: vec!["subject".into()] })
    }

    fn default_with(headers: Step) -> Self {
        CleanSpec {
            version: SPEC_VERSION,
            steps: vec![
                headers,
                Step::StripHtml,
                Step::Nfkc,
                Step::StripControl,
                Step::Lowercase,
                Step::ReplaceUrls { token: default_url_token() },
                Step::ReplaceEmails { token: default_email_token() },
                Step::ReplaceNumbers { token: default_number_token() },
                Step::CollapseWhitespace,
                Step::MaxLength { chars: 20_000, drop: false },
                Step::DropEmpty,
                Step::Dedupe,
            ],
        }
    }

    /// Parses and checks a TOML spec.
    pub fn from_toml(text: &str) -> Result<CleanSpec> {
        let spec: CleanSpec =
            toml::from_str(text).map_err(|e| Error::Spec(format!("invalid cleaning spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("specs always serialize")
    }

    pub fn validate(&self) -> Result<()> {
        if self.version != SPEC_VERSION {
            return Err(Error::Spec(format!(
                "cleaning spec version {} is not supported (this build reads version {SPEC_VERSION})",
                self.version
            )));
        }
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::MaxLength { chars: 0, .. } => {
                    return Err(Error::Spec(format!("step {}: max_length needs chars > 0", i + 1)));
                }
                Step::ReplaceUrls { token }
                | Step::ReplaceEmails { token }
                | Step::ReplaceNumbers { token }
                    if token.chars().any(char::is_whitespace) =>
                {
                    return Err(Error::Spec(format!("step {}: a token must not contain whitespace", i + 1)));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Hex SHA-256 of the canonical JSON form: equal specs hash equal whatever their TOML
    /// formatting, and any change of a step or parameter changes the hash.
    pub fn hash(&self) -> String {
        schemas::sha256_hex(&serde_json::to_vec(self).expect("specs always serialize"))
    }
}

/// A compiled cleaning plan.
#[derive(Debug)]
pub struct CleanPlan {
    spec: CleanSpec,
    hash: String,
    text: Arc<dyn PhysicalExpr>,
    keep: Option<Arc<dyn PhysicalExpr>>,
    text_index: usize,
    /// The steps `text` and `keep` were built from, for one text at a time.
    ops: Vec<TextOp>,
    filters: Vec<Filter>,
}

/// A filter step on the cleaned text: applied by [`CleanPlan::clean_texts`], and as the
/// DataFusion expression [`Filter::expr`] in `keep`.
#[derive(Debug)]
enum Filter {
    MinChars(usize),
    MaxChars(usize),
    NotEmpty,
}

impl Filter {
    fn expr(&self) -> Expr {
        let length = || datafusion::functions::unicode::expr_fn::character_length(col(c::TEXT));
        match *self {
            Filter::MinChars(n) => length().gt_eq(lit(n as i64)),
            Filter::MaxChars(n) => length().lt_eq(lit(n as i64)),
            Filter::NotEmpty => col(c::TEXT).not_eq(lit("")),
        }
    }

    fn keeps(&self, text: &str) -> bool {
        match *self {
            Filter::MinChars(n) => text.chars().count() >= n,
            Filter::MaxChars(n) => text.chars().count() <= n,
            Filter::NotEmpty => !text.is_empty(),
        }
    }
}

/// The 64-bit content hash used by [`Step::Dedupe`] (xxh3 of the cleaned text).
pub fn content_hash(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// The result of running a plan on a batch: every input row with its cleaned text, and which
/// rows the filters keep. The scorer needs the dropped rows too (it reports them as skipped).
#[derive(Debug, Clone)]
pub struct CleanOutput {
    pub batch: RecordBatch,
    pub keep: BooleanArray,
}

impl CleanOutput {
    /// Only the kept rows.
    pub fn kept(&self) -> Result<RecordBatch> {
        Ok(filter_record_batch(&self.batch, &self.keep)?)
    }
}

impl CleanPlan {
    pub fn compile(spec: CleanSpec) -> Result<CleanPlan> {
        spec.validate()?;
        let (mut ops, mut filters) = (Vec::new(), Vec::new());
        for step in &spec.steps {
            let op = match step {
                Step::StripEmailHeaders { keep } => TextOp::StripEmailHeaders(keep.clone()),
                Step::StripMessageHeaders { keep } => TextOp::StripMessageHeaders(keep.clone()),
                Step::StripHtml => TextOp::StripHtml,
                Step::Nfkc => TextOp::Nfkc,
                Step::Lowercase => TextOp::Lowercase,
                Step::ReplaceUrls { token } => TextOp::Replace { what: "urls", token: token.clone() },
                Step::ReplaceEmails { token } => TextOp::Replace { what: "emails", token: token.clone() },
                Step::ReplaceNumbers { token } => TextOp::Replace { what: "numbers", token: token.clone() },
                Step::StripControl => TextOp::StripControl,
                Step::CollapseWhitespace => TextOp::CollapseWhitespace,
                Step::MaxLength { chars, drop: false } => TextOp::Truncate(*chars),
                Step::MaxLength { chars, drop: true } => {
                    filters.push(Filter::MaxChars(*chars));
                    continue;
                }
                Step::MinLength { chars } => {
                    filters.push(Filter::MinChars(*chars));
                    continue;
                }
                Step::DropEmpty => {
                    filters.push(Filter::NotEmpty);
                    continue;
                }
                Step::Dedupe => continue,
            };
            ops.push(op);
        }
        // The same steps and filters as DataFusion expressions, for batches.
        let text_expr = ops
            .iter()
            .fold(col(c::TEXT), |e, op| ScalarUDF::new_from_impl(TextUdf::new(op.clone())).call(vec![e]));
        let schema = clean_schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let ctx = SessionContext::new();
        let text = ctx.create_physical_expr(text_expr, &df_schema)?;
        let keep = filters
            .iter()
            .map(Filter::expr)
            .reduce(Expr::and)
            .map(|e| ctx.create_physical_expr(e, &df_schema))
            .transpose()?;
        let text_index = schema.index_of(c::TEXT)?;
        let hash = spec.hash();
        Ok(CleanPlan { spec, hash, text, keep, text_index, ops, filters })
    }

    pub fn spec(&self) -> &CleanSpec {
        &self.spec
    }

    /// Whether the spec asks for content deduplication (done by the snapshot job).
    pub fn dedupe(&self) -> bool {
        self.spec.steps.contains(&Step::Dedupe)
    }

    /// The canonical hash of the spec this plan was compiled from.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Cleans a batch of the raw schema.
    pub fn apply(&self, batch: &RecordBatch) -> Result<CleanOutput> {
        if batch.schema().fields() != clean_schema().fields() {
            return Err(Error::Internal(format!(
                "clean plan applied to a batch of another schema: {:?}",
                batch.schema()
            )));
        }
        let n = batch.num_rows();
        let cleaned: ArrayRef = self.text.evaluate(batch)?.into_array(n)?;
        let mut columns = batch.columns().to_vec();
        columns[self.text_index] = cleaned;
        let batch = RecordBatch::try_new(batch.schema(), columns)?;
        let keep = match &self.keep {
            None => BooleanArray::from(vec![true; n]),
            Some(e) => {
                let mask = e.evaluate(&batch)?.into_array(n)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| Error::Internal("filter is not boolean".into()))?;
                // Null (unknown) counts as not kept.
                mask.iter().map(|v| Some(v.unwrap_or(false))).collect()
            }
        };
        Ok(CleanOutput { batch, keep })
    }

    /// Cleans texts outside a batch (REST requests), each `None` if the filters drop it: the
    /// steps' functions run in order on two buffers, with none of a batch's set-up, and give
    /// what [`Self::apply`] gives.
    pub fn clean_texts(&self, texts: &[&str]) -> Vec<Option<String>> {
        texts.iter().map(|t| self.clean_text(t)).collect()
    }

    fn clean_text(&self, text: &str) -> Option<String> {
        let mut cleaned = String::with_capacity(text.len());
        match self.ops.split_first() {
            None => cleaned.push_str(text),
            Some((first, _)) => first.run(text, &mut cleaned),
        }
        let mut next = String::with_capacity(cleaned.len());
        for op in self.ops.iter().skip(1) {
            next.clear();
            op.run(&cleaned, &mut next);
            std::mem::swap(&mut cleaned, &mut next);
        }
        self.filters.iter().all(|f| f.keeps(&cleaned)).then_some(cleaned)
    }
}

#[cfg(test)]
mod tests;
