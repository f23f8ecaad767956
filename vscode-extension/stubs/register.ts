/**
 * Preloaded with `node --require`: makes `require('vscode')` return the stub in ./vscode,
 * as VS Code's extension host would return the real API. Names the stub lacks resolve to
 * a placeholder class (capitalised, e.g. `CompletionItem`, which vscode-languageclient
 * extends when it loads) or to undefined, and are recorded in `missing` for tests to see.
 */
import Module from 'node:module';
import * as stub from './vscode';

export const missing = new Set<string>();

const proxy = new Proxy(stub as Record<string | symbol, unknown>, {
  get(target, prop) {
    if (prop in target) {
      return target[prop];
    }
    if (typeof prop === 'string' && /^[A-Z]/.test(prop)) {
      missing.add(prop);
      const placeholder = class {
        constructor(...args: unknown[]) {
          Object.assign(this, { args });
        }
      };
      Object.defineProperty(placeholder, 'name', { value: prop });
      target[prop] = placeholder;
      return placeholder;
    }
    return undefined;
  },
});

type Load = (request: string, parent: unknown, isMain: boolean) => unknown;
const mod = Module as unknown as { _load: Load };
const original = mod._load;
mod._load = function (request, parent, isMain) {
  if (request === 'vscode') {
    return proxy;
  }
  return original.call(this, request, parent, isMain);
};
