// A standard wasi:nn guest in JavaScript (componentize-js), exporting
// wasinn:guest/std-nn and wasi:cli/run (world wasinn:guest/std-runnable in wit/worlds.wit)
// as guest/c-nn does in C.
import { Tensor } from 'wasi:nn/tensor@0.2.0-rc-2024-10-28';
import { load, loadByName } from 'wasi:nn/graph@0.2.0-rc-2024-10-28';

let context = null;
let input = null;

// A wasi:nn err arrives as a thrown ComponentError whose payload is the error resource;
// result<_, string> exports return err by throwing the string.
function describe(e) {
  const err = e && e.payload;
  if (err && typeof err.code === 'function') return `${err.code()}: ${err.data()}`;
  return String(e);
}

export const stdNn = {
  echo(t) {
    return new Tensor(t.dimensions(), t.ty(), t.data());
  },
  loadModel(model) {
    try {
      const graph = load([model.data()], 'onnx', 'cpu');
      context = graph.initExecutionContext();
    } catch (e) {
      throw describe(e);
    }
  },
  setInput(name, t) {
    input = { name, dims: t.dimensions(), ty: t.ty(), data: t.data() };
  },
  infer() {
    try {
      const outputs = context.compute([[input.name, new Tensor(input.dims, input.ty, input.data)]]);
      return outputs[0][1].data().length;
    } catch (e) {
      throw describe(e);
    }
  },
};

// One inference of efficientnet-lite0, loaded by name, on the input guest/c-nn uses too.
export const run = {
  run() {
    try {
      const context = loadByName('efficientnet-lite0').initExecutionContext();
      const input = new Float32Array(3 * 224 * 224);
      for (let i = 0; i < input.length; i++) input[i] = Math.fround(Math.fround(i % 255) / 255) - 0.5;
      const tensor = new Tensor(new Uint32Array([1, 3, 224, 224]), 'FP32', new Uint8Array(input.buffer));
      const bytes = context.compute([['input', tensor]])[0][1].data();
      const logits = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      console.log(`top-1 class ${best}`);
    } catch (e) {
      console.error(describe(e));
      throw e;
    }
  },
};
