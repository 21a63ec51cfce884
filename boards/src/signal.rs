//! Signalling an answer on output pins: one pin per label (an LED, a relay) and an optional
//! "busy" pin while a text is processed. Generic over embedded-hal 1.0's `OutputPin`, so the same
//! driver runs on Linux GPIO ([`crate::linux`]), a microcontroller, or `embedded-hal-mock`.

use embedded_hal::digital::{ErrorKind, OutputPin};

/// A pin that failed to switch; `pin` is the label it shows, or `busy`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GPIO pin `{pin}`: {message} ({kind:?})")]
pub struct SignalError {
    pub pin: String,
    pub kind: ErrorKind,
    pub message: String,
}

impl SignalError {
    fn from_pin<E: embedded_hal::digital::Error>(pin: &str, e: E) -> SignalError {
        SignalError {
            pin: pin.to_owned(),
            kind: e.kind(),
            message: format!("{e:?}"),
        }
    }
}

/// Drives one pin per label and an optional busy pin.
///
/// Protocol, per text (or batch): [`started`](Self::started) raises busy; [`show`](Self::show)
/// lowers the pin lit before (if another), raises the answer's pin when its probability reaches
/// `min_prob` (otherwise nothing stays lit: an unsure answer is no answer), then lowers busy.
pub struct LabelSignal<P> {
    pins: Vec<(String, P)>,
    busy: Option<P>,
    min_prob: f32,
    lit: Option<usize>,
}

impl<P: OutputPin> LabelSignal<P> {
    /// Takes the pins and drives them all low, so a pin that cannot be driven fails here, at
    /// start-up, not in the middle of a stream.
    pub fn new(
        pins: Vec<(String, P)>,
        busy: Option<P>,
        min_prob: f32,
    ) -> Result<Self, SignalError> {
        let mut signal = LabelSignal {
            pins,
            busy,
            min_prob,
            lit: None,
        };
        for (label, pin) in &mut signal.pins {
            pin.set_low().map_err(|e| SignalError::from_pin(label, e))?;
        }
        if let Some(busy) = &mut signal.busy {
            busy.set_low()
                .map_err(|e| SignalError::from_pin("busy", e))?;
        }
        Ok(signal)
    }

    /// The labels that have a pin, in the order given.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.pins.iter().map(|(l, _)| l.as_str())
    }

    /// A text is being processed: busy high.
    pub fn started(&mut self) -> Result<(), SignalError> {
        match &mut self.busy {
            Some(busy) => busy
                .set_high()
                .map_err(|e| SignalError::from_pin("busy", e)),
            None => Ok(()),
        }
    }

    /// Shows an answer (`None`: the text failed, nothing lit) and lowers busy.
    pub fn show(&mut self, answer: Option<(&str, f32)>) -> Result<(), SignalError> {
        let next = answer
            .filter(|(_, p)| *p >= self.min_prob)
            .and_then(|(label, _)| self.pins.iter().position(|(l, _)| l == label));
        if let Some(old) = self.lit.filter(|&old| Some(old) != next) {
            let (label, pin) = &mut self.pins[old];
            pin.set_low().map_err(|e| SignalError::from_pin(label, e))?;
        }
        self.lit = None;
        if let Some(new) = next {
            let (label, pin) = &mut self.pins[new];
            pin.set_high()
                .map_err(|e| SignalError::from_pin(label, e))?;
            self.lit = Some(new);
        }
        match &mut self.busy {
            Some(busy) => busy.set_low().map_err(|e| SignalError::from_pin("busy", e)),
            None => Ok(()),
        }
    }

    /// Drives every pin low (on shutdown), reporting the first failure after trying them all.
    pub fn clear(&mut self) -> Result<(), SignalError> {
        let mut first = None;
        for (label, pin) in &mut self.pins {
            if let Err(e) = pin.set_low() {
                first.get_or_insert(SignalError::from_pin(label, e));
            }
        }
        if let Some(busy) = &mut self.busy {
            if let Err(e) = busy.set_low() {
                first.get_or_insert(SignalError::from_pin("busy", e));
            }
        }
        self.lit = None;
        first.map_or(Ok(()), Err)
    }

    /// Gives the pins back.
    pub fn release(self) -> (Vec<(String, P)>, Option<P>) {
        (self.pins, self.busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::digital::ErrorKind;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
    use embedded_hal_mock::eh1::MockError;

    fn pin(expect: &[T]) -> Mock {
        Mock::new(expect)
    }

    fn done(signal: LabelSignal<Mock>) {
        let (pins, busy) = signal.release();
        for (_, mut p) in pins {
            p.done();
        }
        if let Some(mut b) = busy {
            b.done();
        }
    }

    #[test]
    fn each_answer_switches_exactly_the_pins_it_should() {
        let positive = pin(&[
            T::set(State::Low),  // start-up
            T::set(State::High), // positive 0.93
            T::set(State::High), // positive again: stays lit (re-asserted)
            T::set(State::Low),  // negative 0.88 replaces it
        ]);
        let negative = pin(&[
            T::set(State::Low),  // start-up
            T::set(State::High), // negative 0.88
            T::set(State::Low),  // unsure answer: nothing lit
        ]);
        let busy = pin(&[
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
        ]);
        let mut s = LabelSignal::new(
            vec![("positive".into(), positive), ("negative".into(), negative)],
            Some(busy),
            0.8,
        )
        .unwrap();
        for answer in [
            Some(("positive", 0.93)),
            Some(("positive", 0.97)),
            Some(("negative", 0.88)),
            Some(("negative", 0.55)), // below --min-prob
            None,                     // a failed text: still nothing lit, busy low again
        ] {
            s.started().unwrap();
            s.show(answer).unwrap();
        }
        s.started().unwrap();
        s.show(Some(("neutral", 0.99))).unwrap(); // a label without a pin
        done(s);
    }

    #[test]
    fn without_a_busy_pin_only_label_pins_move() {
        let a = pin(&[T::set(State::Low), T::set(State::High), T::set(State::Low)]);
        let mut s = LabelSignal::new(vec![("a".into(), a)], None, 0.0).unwrap();
        s.started().unwrap();
        s.show(Some(("a", 0.1))).unwrap();
        s.clear().unwrap();
        done(s);
    }

    #[test]
    fn a_failing_pin_is_reported_at_start_up_with_its_label() {
        let ok = pin(&[T::set(State::Low)]);
        let broken = pin(&[
            T::set(State::Low).with_error(MockError::Io(std::io::ErrorKind::PermissionDenied))
        ]);
        // Clones share the expectations: they are checked after the signal kept the originals.
        let (mut ok2, mut broken2) = (ok.clone(), broken.clone());
        let pins = vec![("positive".into(), ok), ("negative".into(), broken)];
        let err = match LabelSignal::new(pins, None, 0.5) {
            Ok(_) => panic!("a broken pin must fail at start-up"),
            Err(e) => e,
        };
        assert_eq!(err.pin, "negative");
        assert_eq!(err.kind, ErrorKind::Other);
        assert!(err.to_string().contains("GPIO pin `negative`"), "{err}");
        ok2.done();
        broken2.done();
    }

    #[test]
    fn a_pin_failing_mid_stream_is_an_error_not_a_panic() {
        let a = pin(&[
            T::set(State::Low),
            T::set(State::High).with_error(MockError::Io(std::io::ErrorKind::Other)),
            T::set(State::Low),
        ]);
        let busy = pin(&[T::set(State::Low), T::set(State::High), T::set(State::Low)]);
        let mut s = LabelSignal::new(vec![("a".into(), a)], Some(busy), 0.5).unwrap();
        s.started().unwrap();
        let err = s.show(Some(("a", 0.9))).unwrap_err();
        assert_eq!(err.pin, "a");
        // Nothing is believed lit after the failure; clear still lowers everything.
        s.clear().unwrap();
        done(s);
    }
}
