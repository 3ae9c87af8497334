//! Scale-out: node work that runs in other processes, on a cluster scheduler.
//!
//! The unit of distribution is a tool's heavy work (a shard of backtests), not a workflow node:
//! a node's LLM and tool calls are journaled by the coordinator, which stays the one writer of
//! the journal. [`work`] holds the units and the shared directory they travel through (content
//! addressed, checksummed); [`slurm`] submits them as array jobs, follows them, retries what
//! failed and cancels what is left when stopped. `lim worker` runs one unit. [`group`] lets the
//! processes of one data-parallel training job exchange gradients.

pub mod group;
pub mod slurm;
pub mod work;

#[cfg(test)]
mod tests;
