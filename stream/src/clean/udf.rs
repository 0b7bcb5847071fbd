//! The text steps as one DataFusion scalar UDF type, parameterized by the operation.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

use super::text;

/// A text-to-text operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum TextOp {
    StripEmailHeaders(Vec<String>),
    StripMessageHeaders(Vec<String>),
    StripHtml,
    Nfkc,
    Lowercase,
    Replace { what: &'static str, token: String },
    StripControl,
    CollapseWhitespace,
    Truncate(usize),
}

impl TextOp {
    fn name(&self) -> String {
        match self {
            TextOp::StripEmailHeaders(_) => "dw_strip_email_headers".into(),
            TextOp::StripMessageHeaders(_) => "dw_strip_message_headers".into(),
            TextOp::StripHtml => "dw_strip_html".into(),
            TextOp::Nfkc => "dw_nfkc".into(),
            TextOp::Lowercase => "dw_lowercase".into(),
            TextOp::Replace { what, .. } => format!("dw_replace_{what}"),
            TextOp::StripControl => "dw_strip_control".into(),
            TextOp::CollapseWhitespace => "dw_collapse_whitespace".into(),
            TextOp::Truncate(_) => "dw_truncate".into(),
        }
    }

    pub(super) fn run(&self, input: &str, out: &mut String) {
        match self {
            TextOp::StripEmailHeaders(keep) => text::strip_email_headers(input, keep, out),
            TextOp::StripMessageHeaders(keep) => text::strip_message_headers(input, keep, out),
            TextOp::StripHtml => text::strip_html(input, out),
            TextOp::Nfkc => text::nfkc(input, out),
            TextOp::Lowercase => text::lowercase(input, out),
            TextOp::Replace { what, token } => {
                let pattern = match *what {
                    "urls" => &*text::URL,
                    "emails" => &*text::EMAIL,
                    _ => &*text::NUMBER,
                };
                text::replace(pattern, token, input, out)
            }
            TextOp::StripControl => text::strip_control(input, out),
            TextOp::CollapseWhitespace => text::collapse_whitespace(input, out),
            TextOp::Truncate(n) => text::truncate(input, *n, out),
        }
    }
}

#[derive(Debug)]
pub(super) struct TextUdf {
    op: TextOp,
    name: String,
    signature: Signature,
}

impl PartialEq for TextUdf {
    fn eq(&self, other: &Self) -> bool {
        self.op == other.op
    }
}
impl Eq for TextUdf {}
impl Hash for TextUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.op.hash(state)
    }
}

impl TextUdf {
    pub(super) fn new(op: TextOp) -> TextUdf {
        TextUdf {
            name: op.name(),
            op,
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        }
    }

    fn apply(&self, input: &StringArray) -> ArrayRef {
        let mut builder = StringBuilder::with_capacity(input.len(), input.value_data().len());
        let mut buf = String::new();
        for v in input.iter() {
            match v {
                None => builder.append_null(),
                Some(s) => {
                    buf.clear();
                    self.op.run(s, &mut buf);
                    builder.append_value(&buf);
                }
            }
        }
        Arc::new(builder.finish())
    }
}

impl ScalarUDFImpl for TextUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(format!("{} takes one argument", self.name)));
        };
        match arg {
            ColumnarValue::Array(a) => {
                let strings = a.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                    DataFusionError::Internal(format!("{} expects Utf8, got {}", self.name, a.data_type()))
                })?;
                Ok(ColumnarValue::Array(self.apply(strings)))
            }
            ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                let out = v.as_deref().map(|s| {
                    let mut buf = String::new();
                    self.op.run(s, &mut buf);
                    buf
                });
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(out)))
            }
            other => Err(DataFusionError::Internal(format!(
                "{} expects Utf8, got {}",
                self.name,
                other.data_type()
            ))),
        }
    }
}
