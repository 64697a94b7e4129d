#!/usr/bin/env node
// Entry point of the `portcullis` command. Portcullis is TypeScript run by Node's type
// stripping, which needs Node.js 24 or newer; say so plainly on an older Node.
const [major] = process.versions.node.split('.').map(Number);
if (major < 24 || !process.features.typescript) {
  process.stderr.write(`portcullis: needs Node.js 24 or newer with type stripping (this is ${process.version}); run it through npm (npm start) or npx, which use the Node 24 from devDependencies\n`);
  process.exit(2);
}
await import('../src/cli/main.ts');
