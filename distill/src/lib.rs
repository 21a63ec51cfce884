//! Distillation on the host: fine-tune the teacher, build the student from every other layer, train
//! it on the teacher's softened outputs (KL·T² + CE (+ cosine)) with candle, write a checkpoint.
//!
//! Empty until the distillation issue fills it: nothing here is done yet. It sits at the top of the
//! dependency chain (`distill → quantize → runtime → boards`).
