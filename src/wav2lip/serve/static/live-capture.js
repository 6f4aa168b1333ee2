// AudioWorklet of the Live page: the microphone's first channel in blocks of `chunk` samples (about
// 20 ms), posted to the page as Float32Arrays (transferred, not copied).
"use strict";

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.size = options.processorOptions.chunk;
    this.buffer = new Float32Array(this.size);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = () => { this.running = false; };
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) {
      let i = 0;
      while (i < input.length) {
        const n = Math.min(input.length - i, this.size - this.filled);
        this.buffer.set(input.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.size) {
          this.port.postMessage(this.buffer, [this.buffer.buffer]);
          this.buffer = new Float32Array(this.size);
          this.filled = 0;
        }
      }
    }
    return this.running;
  }
}

registerProcessor("wav2lip-capture", Capture);
