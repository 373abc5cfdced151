//! Serving: accepting connections with limits, and shutting down gracefully.

pub mod listener;
pub mod shutdown;

#[cfg(test)]
mod tests;
