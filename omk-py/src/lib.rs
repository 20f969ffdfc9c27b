//! The Python extension module `omk._omk`. The public Python API lives in
//! `python/omk/__init__.py`, which re-exports from here; the type stubs are
//! hand-written in `python/omk/_omk.pyi`.
//!
//! - [`handle`]: the `Omk` class (one method per operation);
//! - [`events`] and [`tail`]: `Omk.team_events`, a tail reader over a team's
//!   event log;
//! - [`errors`]: `OmkError` and one subclass per stable error code, and the
//!   boundary that turns errors and panics into them;
//! - [`convert`]: `serde_json::Value` <-> Python objects;
//! - [`approver`]: Python callables deciding approvals (`approval=`).

pub mod approver;
pub mod convert;
pub mod errors;
pub mod events;
pub mod handle;
pub mod slot;

use pyo3::prelude::*;

/// The omk version (same as the Rust crate and `omk --version`).
#[pyfunction]
fn version() -> &'static str {
    omk_core::VERSION
}

#[pymodule]
fn _omk(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", omk_core::VERSION)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_class::<handle::PyOmk>()?;
    m.add_class::<events::TeamEvents>()?;
    errors::register(m)?;
    Ok(())
}
