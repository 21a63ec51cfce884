//! Raspberry Pi board profiles (targets, cores, memory, CPU features such as dotprod) and GPIO
//! signalling generic over `embedded_hal::digital::OutputPin`.
//!
//! Empty until the boards issue fills it: nothing here is done yet. It is the bottom of the
//! dependency chain (`distill → quantize → runtime → boards`) and knows nothing of models.
