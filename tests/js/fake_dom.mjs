// Just enough of a browser for an explorer view to render under node: elements with style, dataset,
// children and events, <select> and <input> values, and a canvas whose 2D context draws nothing but
// counts the calls and keeps the text written since the last clear (titles, labels, legends). Where
// things land is not checked here; that the view runs, builds the DOM contract of explorer.js (root,
// data-main, canvas, readout), writes its labels and redraws on a control move is.

class FakeContext {
  constructor() { this.calls = 0; this.texts = []; }
  measureText(text) { this.calls++; return { width: 7 * String(text).length }; }
  fillText(text) { this.calls++; this.texts.push(String(text)); }
  // Figure.clear(), which starts each redraw, resets the transform first
  setTransform() { this.calls++; this.texts = []; }
}
// every other method of CanvasRenderingContext2D: a counted no-op
const context = (ctx) => new Proxy(ctx, {
  get(target, key) {
    if (key in target) return target[key];
    return () => { target.calls++; };
  },
});

class FakeElement {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.style = {};
    this.dataset = {};
    this.listeners = {};
    this.textContent = "";
    this.innerHTML = "";
    this._value = "";
    this.selectedIndex = 0;
    this.ctx = null;
  }
  appendChild(child) { this.children.push(child); return child; }
  append(...children) { this.children.push(...children); }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  dispatch(type) { for (const fn of this.listeners[type] ?? []) fn({ type, target: this }); }
  getContext() { this.ctx ??= context(new FakeContext()); return this.ctx; }
  get value() {
    return this.tagName === "SELECT" ? (this.children[this.selectedIndex]?.value ?? "") : this._value;
  }
  set value(v) {
    if (this.tagName === "SELECT") {
      const i = this.children.findIndex((o) => o.value === String(v));
      if (i >= 0) this.selectedIndex = i;
    } else {
      this._value = String(v);
    }
  }
  // depth first, this element included
  *walk() {
    yield this;
    for (const child of this.children) if (child instanceof FakeElement) yield* child.walk();
  }
}

// Installs a fake `document` on globalThis; returns the element a view renders into.
export function fakeDom() {
  globalThis.document = { createElement: (tag) => new FakeElement(tag) };
  return new FakeElement("div");
}

// A model as anywidget hands a view: get() of the synced traits, on() and send() that go nowhere.
export function fakeModel(traits) {
  return { get: (key) => traits[key], on() {}, send() {} };
}

export function find(el, predicate) {
  for (const node of el.walk()) if (predicate(node)) return node;
  return null;
}

export function control(el, name) {
  const input = find(el, (node) => node.dataset.control === name);
  if (!input) throw new Error(`no control ${name}`);
  return input;
}

// Renders a view with its explorer's data; returns the root, its canvas and readout.
export function renderView(view, data) {
  const el = fakeDom();
  view.render({ model: fakeModel({ _payload: JSON.stringify(data) }), el });
  const root = el.children[0];
  return { el, root, canvas: find(root, (n) => n.tagName === "CANVAS"),
           readout: find(root, (n) => n.className === "bnlab-readout") };
}
