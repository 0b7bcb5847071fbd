//! A `VarStore` to and from safetensors bytes in memory (so weights can be sealed before they
//! touch the disk), with every tensor's presence and shape checked on load.

use tch::Tensor;
use tch::nn::VarStore;

use crate::{Error, Result};

/// The variables of `vs` as safetensors bytes, sorted by name.
pub(crate) fn to_safetensors(vs: &VarStore) -> Result<Vec<u8>> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let views =
        vars.iter().map(|(name, t)| Ok((name.clone(), TensorBytes::of(t)?))).collect::<Result<Vec<_>>>()?;
    safetensors::tensor::serialize(views, &None)
        .map_err(|e| Error::Artifact(format!("serializing the weights: {e}")))
}

/// Copies every variable of `vs` from safetensors `bytes`; a missing tensor or another shape
/// is an error naming it.
pub(crate) fn load_safetensors(vs: &VarStore, bytes: &[u8]) -> Result<()> {
    load_safetensors_where(vs, bytes, |_| true)
}

/// [`load_safetensors`] for the variables whose name `wanted` accepts (the others keep their
/// values): a pretrained encoder under a freshly initialized head.
pub(crate) fn load_safetensors_where(
    vs: &VarStore,
    bytes: &[u8],
    wanted: impl Fn(&str) -> bool,
) -> Result<()> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Artifact(format!("the weights are not safetensors: {e}")))?;
    tch::no_grad(|| {
        for (name, mut var) in vs.variables().into_iter().filter(|(name, _)| wanted(name)) {
            let view =
                file.tensor(&name).map_err(|e| Error::Artifact(format!("the weights lack `{name}`: {e}")))?;
            let t = Tensor::try_from(view)?;
            if t.size() != var.size() {
                return Err(Error::Artifact(format!(
                    "`{name}` has shape {:?}, the card needs {:?}",
                    t.size(),
                    var.size()
                )));
            }
            var.f_copy_(&t)?;
        }
        Ok(())
    })
}

/// A tensor's bytes for safetensors.
struct TensorBytes {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl TensorBytes {
    fn of(t: &Tensor) -> Result<TensorBytes> {
        let t = t.contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        Ok(TensorBytes {
            dtype: t.kind().try_into()?,
            shape: t.size().iter().map(|&d| d as usize).collect(),
            data,
        })
    }
}

impl safetensors::View for TensorBytes {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}
