// A standard wasi:nn guest in JavaScript (componentize-js), exporting
// wasinn:guest/std-nn (wit/worlds.wit) as guest/c-nn does in C.
import { Tensor } from 'wasi:nn/tensor@0.2.0-rc-2024-10-28';
import { load } from 'wasi:nn/graph@0.2.0-rc-2024-10-28';

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
