//! Data parallelism inside one training step.
//!
//! burn's CPU backend runs every operation on the calling thread. A step can still use several
//! cores: the batch is cut into fixed row ranges (shards), each shard's loss is computed and
//! differentiated on its own thread against its own copy of the parameters (same values and
//! parameter ids, separate autodiff leaves, so the shards' graphs never merge under one lock),
//! and the per-parameter gradients are added in shard order before one optimizer step on the
//! model itself. Each shard's loss is its part of the full-batch loss (its sum divided by the
//! whole batch's denominator), so the shards' losses add up to the full-batch loss and their
//! gradients to its gradient; gradient clipping then applies to the sum.
//!
//! The split and the order of the sums depend only on the batch size and the number of shards,
//! never on timing: a run is reproducible for a seed and a shard count. Different shard counts
//! add the same numbers in another order, so they agree only to rounding.
//!
//! The same shards can be spread over several processes, on one node or many ([`Exchange`],
//! [`group_gradients`]): every process draws the same batch, differentiates its consecutive
//! share of the shards, and sends each shard's gradients to the others; every process then adds
//! all shards' gradients in shard order, exactly as one process would, and takes the same
//! optimizer step. A group of any size therefore trains the very model (bit for bit) that one
//! process with the same shard count trains.

use std::ops::Range;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Tensor, TensorData};

use crate::error::FoundationError;

/// Shards a training step is cut into unless told otherwise. A fixed number, not the machine's
/// cores: another shard count adds the same numbers in another order, so a seed gives the same
/// model on every machine only if the count does not follow the hardware (a research run
/// trained on a laptop replays on a 16-core server). Two use two cores fully; `--shards` asks for
/// more.
pub const DEFAULT_SHARDS: usize = 2;

/// The most threads used for work whose results do not depend on them (predictions).
pub const MAX_WORKERS: usize = 4;

/// Threads for work whose results do not depend on their number: the cores available, at most
/// [`MAX_WORKERS`].
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_WORKERS)
}

/// The row ranges of `rows` rows cut into `shards` near-equal consecutive shards (fewer when
/// there are fewer rows than shards; none is empty).
pub fn shard_ranges(rows: usize, shards: usize) -> Vec<Range<usize>> {
    let n = shards.clamp(1, rows.max(1));
    (0..n).map(|i| i * rows / n..(i + 1) * rows / n).collect()
}

/// Computes `loss` for every shard input, the first on the calling thread against `model`,
/// every other one on its own thread against its own copy of `model`'s parameters. Returns the
/// values of the returned scalars and the gradients of the first scalar, each summed over the
/// shards in shard order. With one input, nothing but the calling thread is used.
pub(crate) fn sharded_gradients<M, S, F>(
    model: &M,
    inputs: Vec<S>,
    loss: F,
) -> (Vec<f32>, GradientsParams)
where
    M: Module,
    S: Send,
    F: Fn(&M, S) -> Vec<Tensor<1>> + Sync,
{
    sum_shards(model, each_shard(model, inputs, loss))
}

/// The values and gradients of every shard input, in input order (see [`sharded_gradients`]).
fn each_shard<M, S, F>(model: &M, inputs: Vec<S>, loss: F) -> Vec<(Vec<f32>, GradientsParams)>
where
    M: Module,
    S: Send,
    F: Fn(&M, S) -> Vec<Tensor<1>> + Sync,
{
    crate::memory::keep_freed_buffers();
    let run = |m: &M, input: S| {
        let losses = loss(m, input);
        let values: Vec<f32> = losses
            .iter()
            .map(|t| t.clone().into_scalar::<f32>())
            .collect();
        let grads = match losses.into_iter().next() {
            Some(total) => GradientsParams::from_grads(total.backward(), m),
            None => GradientsParams::new(),
        };
        (values, grads)
    };
    if inputs.len() <= 1 {
        return inputs.into_iter().map(|input| run(model, input)).collect();
    }
    std::thread::scope(|scope| {
        let run = &run;
        let mut inputs = inputs.into_iter();
        let first = inputs.next();
        let handles: Vec<_> = inputs
            .map(|input| {
                // Fresh autodiff leaves with the same values and parameter ids.
                let replica = model.valid().train();
                scope.spawn(move || run(&replica, input))
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len() + 1);
        if let Some(input) = first {
            out.push(run(model, input));
        }
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    })
}

/// Values and gradients summed over the shards, in shard order.
fn sum_shards<M: Module>(
    model: &M,
    results: Vec<(Vec<f32>, GradientsParams)>,
) -> (Vec<f32>, GradientsParams) {
    let mut values: Vec<f32> = Vec::new();
    let mut acc = GradientsAccumulator::<M>::new();
    for (i, (v, g)) in results.into_iter().enumerate() {
        if i == 0 {
            values = v;
        } else {
            for (a, b) in values.iter_mut().zip(v) {
                *a += b;
            }
        }
        acc.accumulate(model, g);
    }
    (values, acc.grads())
}

/// The processes training one model together, data-parallel: each knows its place and can
/// hand every other one a message. Implemented over TCP by the cluster layer (processes
/// started by `srun`, on one node or many) and by threads in tests; [`Solo`] is a group of one.
pub trait Exchange {
    /// This process's place in the group, from 0.
    fn rank(&self) -> usize;
    /// Processes in the group.
    fn world(&self) -> usize;
    /// Every process's `mine` for this round, in rank order (this one's included). Every
    /// process calls it the same number of times.
    ///
    /// # Errors
    /// A process left the group or cannot be reached.
    fn all_gather(&mut self, mine: Vec<u8>) -> Result<Vec<Vec<u8>>, String>;
}

/// A group of one process: training as usual.
#[derive(Debug, Default, Clone, Copy)]
pub struct Solo;

impl Exchange for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_gather(&mut self, mine: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
        Ok(vec![mine])
    }
}

/// The shards (indices into a step's shard list of `shards`) that process `rank` of `world`
/// differentiates: a consecutive share, none when there are fewer shards than processes.
pub fn owned_shards(shards: usize, rank: usize, world: usize) -> Range<usize> {
    if shards < world {
        return if rank < shards { rank..rank + 1 } else { 0..0 };
    }
    shard_ranges(shards, world)
        .get(rank)
        .cloned()
        .unwrap_or(0..0)
}

/// [`sharded_gradients`] spread over `group`: this process differentiates its share of
/// `inputs` (all of a step's shards, the same in every process), and every process gets back
/// the same sums, added in shard order: what one process would compute, bit for bit.
///
/// # Errors
/// The group failed, or another process sent gradients of another model.
pub(crate) fn group_gradients<M, S, F>(
    model: &M,
    inputs: Vec<S>,
    loss: F,
    group: &mut dyn Exchange,
) -> Result<(Vec<f32>, GradientsParams), FoundationError>
where
    M: Module,
    S: Send,
    F: Fn(&M, S) -> Vec<Tensor<1>> + Sync,
{
    if group.world() <= 1 {
        return Ok(sharded_gradients(model, inputs, loss));
    }
    let mine = owned_shards(inputs.len(), group.rank(), group.world());
    let local: Vec<S> = inputs
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| mine.contains(&i).then_some(s))
        .collect();
    let local = each_shard(model, local, loss);
    let all = group
        .all_gather(encode_shards(model, &local))
        .map_err(FoundationError::Group)?;
    let mut shards = Vec::new();
    for (rank, bytes) in all.iter().enumerate() {
        shards.extend(
            decode_shards(model, bytes)
                .map_err(|e| FoundationError::Group(format!("process {rank}: {e}")))?,
        );
    }
    Ok(sum_shards(model, shards))
}

/// Shards' values and gradients as bytes: the shard count, then per shard its values and, per
/// parameter in visiting order, a presence byte and the gradient's numbers (little-endian).
fn encode_shards<M: Module>(model: &M, shards: &[(Vec<f32>, GradientsParams)]) -> Vec<u8> {
    struct Put<'a> {
        grads: &'a GradientsParams,
        out: &'a mut Vec<u8>,
    }
    impl ModuleVisitor for Put<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            match self.grads.get::<D>(param.id) {
                Some(g) => {
                    let v = g
                        .into_data()
                        .convert::<f32>()
                        .try_to_vec::<f32>()
                        .unwrap_or_default();
                    self.out.push(1);
                    self.out.extend((v.len() as u64).to_le_bytes());
                    for x in v {
                        self.out.extend(x.to_le_bytes());
                    }
                }
                None => self.out.push(0),
            }
        }
    }
    let mut out = Vec::new();
    out.extend((shards.len() as u32).to_le_bytes());
    for (values, grads) in shards {
        out.extend((values.len() as u32).to_le_bytes());
        for x in values {
            out.extend(x.to_le_bytes());
        }
        model.visit(&mut Put {
            grads,
            out: &mut out,
        });
    }
    out
}

/// The inverse of [`encode_shards`] for `model`'s parameters.
fn decode_shards<M: Module>(
    model: &M,
    bytes: &[u8],
) -> Result<Vec<(Vec<f32>, GradientsParams)>, String> {
    struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }
    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
            let end = end.ok_or_else(|| "its gradients are truncated".to_string())?;
            let s = &self.bytes[self.at..end];
            self.at = end;
            Ok(s)
        }
        fn u32(&mut self) -> Result<usize, String> {
            let b = self.take(4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        }
        fn f32s(&mut self, n: usize) -> Result<Vec<f32>, String> {
            let b = self.take(n.checked_mul(4).ok_or("a length overflows")?)?;
            Ok(b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        }
    }
    struct Get<'a, 'b> {
        r: &'a mut Reader<'b>,
        grads: GradientsParams,
        err: Option<String>,
    }
    impl ModuleVisitor for Get<'_, '_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.err.is_some() {
                return;
            }
            let mut read = || -> Result<(), String> {
                if self.r.take(1)?[0] == 0 {
                    return Ok(());
                }
                let b = self.r.take(8)?;
                let n = u64::from_le_bytes(b.try_into().map_err(|_| "bad length")?) as usize;
                let value = param.val().inner();
                let dims = value.dims();
                if n != dims.iter().product::<usize>() {
                    return Err(format!(
                        "a gradient of {n} numbers for a parameter of shape {dims:?}: the processes train different models"
                    ));
                }
                let v = self.r.f32s(n)?;
                let t = Tensor::<D>::from_data(TensorData::new(v, dims), &value.device());
                self.grads.register::<D>(param.id, t);
                Ok(())
            };
            if let Err(e) = read() {
                self.err = Some(e);
            }
        }
    }
    let mut r = Reader { bytes, at: 0 };
    let n = r.u32()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.u32()?;
        let values = r.f32s(k)?;
        let mut get = Get {
            r: &mut r,
            grads: GradientsParams::new(),
            err: None,
        };
        model.visit(&mut get);
        if let Some(e) = get.err {
            return Err(e);
        }
        out.push((values, get.grads));
    }
    if r.at != bytes.len() {
        return Err(
            "its gradients have trailing bytes: the processes train different models".into(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_rows_once() {
        assert_eq!(shard_ranges(64, 2), vec![0..32, 32..64]);
        assert_eq!(shard_ranges(5, 3), vec![0..1, 1..3, 3..5]);
        assert_eq!(shard_ranges(2, 4), vec![0..1, 1..2]);
        assert_eq!(shard_ranges(7, 1), vec![0..7]);
        assert!((1..=MAX_WORKERS).contains(&workers()));
    }
}
