#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    goheap_fuzz::goroutines(data);
});
