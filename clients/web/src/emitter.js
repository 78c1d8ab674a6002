// A minimal typed-by-convention event emitter: on/off/once/emit. A throwing listener is logged
// and does not stop the others (one broken UI handler must not break the room).

export class Emitter {
  #listeners = new Map();

  /** Adds a listener; returns a function that removes it. */
  on(event, listener) {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  once(event, listener) {
    const off = this.on(event, (...args) => {
      off();
      listener(...args);
    });
    return off;
  }

  emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (e) {
        console.error(`prism: a '${event}' listener threw`, e);
      }
    }
  }
}
