//! Ctrl-C for long runs (goals, autopilot, ralph): the first one asks the
//! run to stop or pause through the library, exactly as the command would
//! from another terminal, so the run ends with its state recorded; a second
//! one ends the process at once.

use omk_core::Omk;

/// Install the handler for the run `id`; `doing` names the action in the
/// message ("stopping", "pausing"), `action` performs it.
pub fn on_ctrl_c(
    omk: &Omk,
    id: String,
    doing: &'static str,
    action: fn(&Omk, &str) -> omk_core::Result<()>,
) -> omk_core::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])
        .map_err(|e| crate::chat::io_err("install the Ctrl-C handler", e))?;
    let omk = omk.clone();
    std::thread::Builder::new()
        .name("omk-ctrl-c".into())
        .spawn(move || {
            let mut asked = false;
            for _ in signals.forever() {
                if asked {
                    std::process::exit(130);
                }
                asked = true;
                crate::errln!("omk: {doing} {id} (Ctrl-C again to quit at once)");
                // The run may not have written its state yet.
                for _ in 0..50 {
                    match action(&omk, &id) {
                        Err(omk_core::Error::NotFound(_)) => {
                            std::thread::sleep(std::time::Duration::from_millis(100))
                        }
                        Err(e) => {
                            crate::errln!("omk: {doing} {id} failed: {e}");
                            break;
                        }
                        Ok(()) => break,
                    }
                }
            }
        })
        .map_err(|e| crate::chat::io_err("start the Ctrl-C thread", e))?;
    Ok(())
}
