//! The SSE decoder on arbitrary bytes cut at arbitrary points. The first two bytes choose the
//! event bound (1 to 65536) and the cut positions' seed. No panic; the bound holds; with a
//! bound larger than the input, any cut decodes exactly like the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmx_providers::sse::{SseDecoder, SseError, SseEvent};

fn decode(chunks: &[&[u8]], max: usize) -> (Vec<SseEvent>, Option<SseError>, Option<bool>) {
    let mut d = SseDecoder::new(max);
    let mut events = Vec::new();
    for c in chunks {
        let r = d.push(c);
        while let Some(e) = d.next_event() {
            assert!(e.data.len() <= max, "an event over the bound came out");
            events.push(e);
        }
        if let Err(e) = r {
            assert_eq!(
                d.push(b"data: x\n\n"),
                Err(e.clone()),
                "a failed decoder stays failed"
            );
            return (events, Some(e), None);
        }
    }
    (events, None, Some(d.finish()))
}

fuzz_target!(|data: &[u8]| {
    let [a, b, input @ ..] = data else {
        return;
    };
    let max = 1 + (usize::from(*a) << 8 | usize::from(*b));
    // Cuts: a simple generator seeded by the bound bytes, so the same input cuts the same way.
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest = input;
    let mut seed = u32::from(*a) * 31 + u32::from(*b) + 7;
    while !rest.is_empty() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (seed >> 16) as usize % (rest.len() + 1);
        let (head, tail) = rest.split_at(n);
        chunks.push(head);
        rest = tail;
    }
    let cut = decode(&chunks, max);
    if max > input.len() {
        assert_eq!(cut, decode(&[input], max), "the cut changed the events");
    }
});
