//! The runtime's one integration-test binary: the model against transformers + PEFT, and the
//! engine against plain batched generation. Needs the default model (`loramux models fetch`).

mod engine;
mod reference;
