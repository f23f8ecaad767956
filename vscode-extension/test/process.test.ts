import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildModelArgs, checkTandemImportable, LineBuffer, runProcess } from '../src/logic/process';

describe('LineBuffer', () => {
  it('splits across chunks and keeps the unterminated rest', () => {
    const b = new LineBuffer();
    assert.deepEqual(b.push('a\nb'), ['a']);
    assert.deepEqual(b.push('c\r\nd\re'), ['bc', 'd']);
    assert.deepEqual(b.flush(), ['e']);
    assert.deepEqual(b.flush(), []);
  });
});

describe('runProcess', () => {
  it('streams lines from stdout and stderr and reports the exit code', async () => {
    const lines: string[] = [];
    const r = await runProcess(process.execPath, ['-e', 'console.log("one"); console.error("two"); process.stdout.write("three"); process.exit(3)'], {
      onLine: (l, s) => lines.push(`${s}:${l}`),
    });
    assert.equal(r.code, 3);
    assert.deepEqual(lines.sort(), ['stderr:two', 'stdout:one', 'stdout:three']);
  });
  it('reports a missing program as a spawn error', async () => {
    const r = await runProcess('/definitely/not/here/python', []);
    assert.match(r.spawnError ?? '', /ENOENT/);
  });
  it('kills the process on abort', async () => {
    const ac = new AbortController();
    const p = runProcess(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    const r = await p;
    assert.equal(r.aborted, true);
  });
  it('kills the process on timeout', async () => {
    const r = await runProcess(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { timeoutMs: 100 });
    assert.equal(r.timedOut, true);
  });
});

// Fake interpreters: shell scripts that act like `python -c "import tandem"` would.
describe('checkTandemImportable', { skip: process.platform === 'win32' }, () => {
  let dir = '';
  const script = (name: string, body: string): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return p;
  };
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-py-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('passes -c with an import of tandem and reports where it is', async () => {
    const py = script('good', 'case "$2" in *"import tandem"*) printf /site/tandem/__init__.py; exit 0;; esac; exit 9');
    const r = await checkTandemImportable(py);
    assert.equal(r.ok, true);
    assert.equal(r.location, '/site/tandem/__init__.py');
  });
  it('fails with the ModuleNotFoundError text', async () => {
    const py = script('bad', 'echo "ModuleNotFoundError: No module named \'tandem\'" >&2; exit 1');
    const r = await checkTandemImportable(py);
    assert.equal(r.ok, false);
    assert.equal(r.exitCode, 1);
    assert.match(r.stderr ?? '', /No module named 'tandem'/);
  });
  it('fails for a missing interpreter and for a hung one', async () => {
    assert.match((await checkTandemImportable(path.join(dir, 'missing'))).spawnError ?? '', /ENOENT/);
    const hung = script('hung', 'sleep 30');
    assert.equal((await checkTandemImportable(hung, 200)).timedOut, true);
  });
});

describe('buildModelArgs', () => {
  it('runs the tandem_models.build module', () => {
    assert.deepEqual(buildModelArgs(), ['-m', 'tandem_models.build']);
  });
});
