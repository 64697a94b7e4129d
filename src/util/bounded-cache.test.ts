import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BoundedCache } from './bounded-cache.ts';

test('entries expire at their time, and an expired entry is dropped', () => {
  const cache = new BoundedCache<string, number>(10);
  cache.set('a', 1, 1000);
  assert.equal(cache.get('a', 999), 1);
  assert.equal(cache.get('a', 1000), undefined);
  assert.equal(cache.size, 0);
  cache.set('forever', 2);
  assert.equal(cache.get('forever', Number.MAX_SAFE_INTEGER), 2);
});

test('a full cache drops its oldest entry; setting a key again makes it the newest', () => {
  const cache = new BoundedCache<string, number>(2);
  cache.set('a', 1);
  cache.set('b', 2);
  cache.set('a', 3);
  cache.set('c', 4);
  assert.equal(cache.get('b', 0), undefined);
  assert.equal(cache.get('a', 0), 3);
  assert.equal(cache.get('c', 0), 4);
  assert.equal(cache.size, 2);
  cache.delete('a');
  assert.equal(cache.get('a', 0), undefined);
});

test('a cache of size 0 keeps nothing', () => {
  const cache = new BoundedCache<string, number>(0);
  cache.set('a', 1);
  assert.equal(cache.get('a', 0), undefined);
  assert.equal(cache.size, 0);
});
