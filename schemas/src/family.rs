//! The model families: the one name of each, as config, run params, cards and the registry
//! write it. What a family *does* (fit, load) lives in `trainer::family`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Hashed n-gram features, multinomial logistic regression.
    LogReg,
    /// MiniLM's tokenizer, an embedding and a bidirectional LSTM.
    BiLstm,
    /// The pretrained MiniLM-L6 encoder with a classification head.
    MiniLm,
    /// A module exported from PyTorch: imported, never trained here.
    TorchScript,
}

impl Family {
    /// Every family, in the order they are documented.
    pub const ALL: [Family; 4] = [Family::LogReg, Family::BiLstm, Family::MiniLm, Family::TorchScript];
    /// The families `train` fits.
    pub const TRAINABLE: [Family; 3] = [Family::LogReg, Family::BiLstm, Family::MiniLm];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::LogReg => "logreg",
            Family::BiLstm => "bilstm",
            Family::MiniLm => "minilm",
            Family::TorchScript => "torchscript",
        }
    }

    pub fn trainable(self) -> bool {
        Family::TRAINABLE.contains(&self)
    }

    /// The names of `families`, comma-separated (for error messages).
    pub fn names(families: &[Family]) -> String {
        families.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A family name that is none of [`Family::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model family `{0}` (available: {families})", families = Family::names(&Family::ALL))]
pub struct UnknownFamily(pub String);

impl FromStr for Family {
    type Err = UnknownFamily;

    fn from_str(s: &str) -> Result<Family, UnknownFamily> {
        Family::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| UnknownFamily(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for f in Family::ALL {
            assert_eq!(f.as_str().parse::<Family>(), Ok(f));
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
            assert_eq!(serde_json::from_str::<Family>(&format!("\"{f}\"")).unwrap(), f);
        }
        let err = "xgboost".parse::<Family>().unwrap_err().to_string();
        assert!(err.contains("`xgboost`") && err.contains("logreg, bilstm, minilm, torchscript"), "{err}");
        assert!(!Family::TorchScript.trainable() && Family::MiniLm.trainable());
    }
}
