//! A one-shot result slot filled by a background thread and awaited in
//! short slices (so the waiting thread can look at Python's signals in
//! between). Unlike `mpsc::Receiver` it is `Sync`, so a reference to it can
//! cross `py.detach`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct Slot<T> {
    value: Mutex<Option<T>>,
    filled: Condvar,
}

impl<T> Slot<T> {
    pub fn new() -> Arc<Slot<T>> {
        Arc::new(Slot {
            value: Mutex::new(None),
            filled: Condvar::new(),
        })
    }

    pub fn put(&self, v: T) {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some(v);
        self.filled.notify_all();
    }

    /// The value, if it arrives within `timeout`.
    pub fn take_within(&self, timeout: Duration) -> Option<T> {
        let g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = self
            .filled
            .wait_timeout_while(g, timeout, |v| v.is_none())
            .unwrap_or_else(|p| p.into_inner());
        g.take()
    }

    /// True when nobody can fill the slot any more (its thread died
    /// without putting a value, e.g. by panicking).
    pub fn abandoned(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
            && self
                .value
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
    }
}

/// Run `f` on a named thread, its result (or the panic it turned into) put
/// in the returned slot.
pub fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Arc<Slot<T>>> {
    let slot = Slot::new();
    let out = slot.clone();
    std::thread::Builder::new().name(name).spawn(move || {
        out.put(f());
    })?;
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_in_slices_until_filled() {
        let slot = spawn("t".into(), || {
            std::thread::sleep(Duration::from_millis(120));
            7
        })
        .unwrap();
        let mut slices = 0;
        let v = loop {
            if let Some(v) = slot.take_within(Duration::from_millis(20)) {
                break v;
            }
            slices += 1;
        };
        assert_eq!(v, 7);
        assert!(slices >= 2, "{slices}");
    }
}
