// A data-flow map operator in JavaScript (componentize-js), built against Azure's own
// world wasm-graph:processor/map-impl, after Azure's Python map sample: a
// `{"temperature": {"value": F, "unit": "F"}}` payload with an integer value becomes
// Celsius, rounded to an integer as Python's round() does (the sample converts every
// integer value whatever its unit; this one only Fahrenheit); anything else passes unchanged.
// Its `init` takes `context` (the logger context, default "js-map"). A message of content
// type application/octet-stream is read and answered with {"n": length, "fnv1a": 32-bit
// FNV-1a of its bytes} (what the data path's tests check the bytes by); one of
// application/x-echo has its payload's bytes handed back as `bytes` (the result's spans).
import { log } from 'wasm-graph:processor/logger@1.1.0';
import { addToCounter } from 'wasm-graph:processor/metrics@1.1.0';

let context = 'js-map';
const decoder = new TextDecoder();
const encoder = new TextEncoder();

// Python's round(): half to even.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function bytesOf(payload) {
  return payload.tag === 'buffer' ? payload.val.read() : payload.val;
}

export const map = {
  init(configuration) {
    for (const [key, value] of configuration.properties) {
      if (key === 'context') context = value;
    }
    log('info', context, 'Init invoked');
    return true;
  },
  process(message) {
    if (message.tag !== 'message') {
      throw { message: 'Unexpected input type: Expected DataModel_Message' };
    }
    try {
      addToCounter('js_requests', { tag: 'u64', val: 1n }, [{ key: 'module', value: context }]);
    } catch (e) {
      // a refused metric must not fail the message
    }
    const msg = message.val;
    const ctype = msg.contentType;
    if (ctype && ctype.tag === 'string' && ctype.val === 'application/octet-stream') {
      const bytes = bytesOf(msg.payload);
      let h = 0x811c9dc5;
      for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193);
      msg.payload = { tag: 'bytes', val: encoder.encode(JSON.stringify({ n: bytes.length, fnv1a: h >>> 0 })) };
      return { tag: 'message', val: msg };
    }
    if (ctype && ctype.tag === 'string' && ctype.val === 'application/x-echo') {
      msg.payload = { tag: 'bytes', val: bytesOf(msg.payload) };
      return { tag: 'message', val: msg };
    }
    let data;
    try {
      data = JSON.parse(decoder.decode(bytesOf(msg.payload)));
    } catch (e) {
      throw { message: 'payload is not JSON' };
    }
    const t = data && data.temperature;
    if (t && Number.isInteger(t.value) && t.unit === 'F') {
      t.value = roundHalfEven((t.value - 32) * 5.0 / 9.0);
      t.unit = 'C';
      msg.payload = { tag: 'bytes', val: encoder.encode(JSON.stringify(data)) };
    }
    return { tag: 'message', val: msg };
  },
};
