//! The engine thread: feeds queued requests to the [`EngineState`] and steps it while it has
//! work; blocks on the queue when it has none.

use super::{EngineRequest, EngineState};
use std::sync::mpsc::Receiver;

pub(super) fn run(mut state: EngineState, rx: Receiver<EngineRequest>) {
    loop {
        if state.is_idle() {
            match rx.recv() {
                Ok(r) => state.push(r),
                Err(_) => return, // every handle dropped: shut down
            }
        }
        while let Ok(r) = rx.try_recv() {
            state.push(r);
        }
        state.step();
    }
}
