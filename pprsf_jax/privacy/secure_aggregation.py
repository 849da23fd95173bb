"""Simulated secure aggregation: pairwise-masked sums (Bonawitz et al., 2017), inside JAX.

"Practical Secure Aggregation for Privacy-Preserving Machine Learning" (CCS 2017), pairwise-mask
variant. Every client encodes its update as fixed-point integers modulo 2**32 and adds, for every
other client of the cohort, a pseudo-random mask that the partner subtracts: the server receives
only masked vectors, and the masks cancel in their sum.

Threat model simulated:

* The server is honest-but-curious: it follows the protocol but looks at everything it receives,
  that is each client's `MaskedUpload` (uniformly random-looking on its own), the client ids and
  who took part and who survived. It learns the sum of the survivors' encoded updates and nothing
  more about any single one (as long as at least two survivors are summed: the "sum" of one
  client is that client's update, as in the real protocol).
* Clients are honest and do not collude with the server. In the real protocol the pair seed
  s_ij comes from a Diffie-Hellman agreement between clients i and j, which the server cannot
  compute; here it is derived from a `round_key` via `jax.random.fold_in`, and the PRG is
  `jax.random.bits` (threefry). This simulates the *data flow* of the protocol (what the server
  must and must not receive, that the arithmetic is exact, what dropout costs); it is not a
  cryptographic implementation and claims no cryptographic security.
* Dropout: clients that drop before masking are simply not in the cohort (`present=False`);
  clients that drop after masking leave un-cancelled masks in the survivors' vectors, which the
  server removes after learning the seeds s_ij between each dropped client and each survivor (in
  the real protocol: by reconstructing the dropped client's key from the survivors' Shamir shares).
  `unmask_sum` simulates that step by deriving those seeds itself. The self-mask of the
  double-masking variant (which protects a client declared dropped whose upload arrives late) is
  not simulated: a client marked as dropped is never summed.

Representable range. With f = `fractional_bits` and B = `max_abs_value`, each entry is clipped
to [-B, B] and encoded as the int32 round(x * 2**f) (fixed-point step 2**-f, rounding to nearest,
ties to even), stored in two's complement as uint32. Sums are taken modulo 2**32, and a sum
decodes correctly iff the true sum of the encoded integers lies in [-2**31, 2**31), i.e. (as
the sums here are symmetric) |sum| < 2**31: it is then the int32 read of the uint32 total.
Encoded magnitudes are at most Q = round(B' * 2**f) <= B * 2**f + 1/2, with B' the largest
float32 <= B, so `check_range` refuses any configuration where C clients could leave that range
(C * B * 2**f >= 2**31, or the rounding edge case C * Q >= 2**31); once it passes, the sum of C
clients decodes exactly for *any* inputs, since clipping bounds every entry.

Quantization error. An entry within [-B, B] is off by at most 0.5 * 2**-f after encoding, so a
sum over C clients is off by at most C * 0.5 * 2**-f. `decode` then converts the exact int32
total to float32, which rounds to 24 significant bits (a relative error of at most 2**-24 of
the decoded value), the one extra error of a float32 result.

Outside the range. Entries beyond [-B, B] (including +-inf) are clipped to +-B, never wrapped;
NaN is encoded as 0. Both are counted, per client, by `encode` (NaN must not silently become a
number: the count is how the caller learns of it), and `secure_sum` reports the total count over
the survivors, itself sent through the masked channel so the server learns only the total.

Cost, with C client slots and D entries per vector: masking computes C * (C - 1) PRG streams of D
words (each client expands one stream per partner, as in the real protocol) in C sequential steps
of [C, D] work; unmasking sums [C, D] and then, per client that dropped after masking, C streams
of D words in one [C, D] step. Nothing [C, C, D] is ever materialized.
"""

from __future__ import annotations

import fractions
import math
import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_WRAP = 2**31  # sums must stay in [-2**31, 2**31) to be read back as int32
_MAX_FRACTIONAL_BITS = 30  # keeps 2**f and 2**-f exact normal float32 and B * 2**f >= B


class SecureAggregationConfig(NamedTuple):
  fractional_bits: int  # fixed-point scale 2**fractional_bits, i.e. step 2**-fractional_bits
  max_abs_value: float  # B: each client's entries are clipped to [-B, B] before encoding


class MaskedUpload(NamedTuple):
  # uint32 [D] (or stacked [C, D]): encoded update + pairwise masks, modulo 2**32. This is the
  # ONLY thing the server-side `unmask_sum` receives from clients.
  masked: jax.Array


def _validated(config: SecureAggregationConfig) -> tuple[int, float]:
  """(f, B) as Python numbers, or ValueError if either is out of its domain."""
  bits = config.fractional_bits
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
    raise ValueError(f"fractional_bits must be an integer in [0, {_MAX_FRACTIONAL_BITS}], "
                     f"got {bits!r}")
  bits = operator.index(bits)
  if not 0 <= bits <= _MAX_FRACTIONAL_BITS:
    raise ValueError(f"fractional_bits must be in [0, {_MAX_FRACTIONAL_BITS}], got {bits}")
  try:
    bound = float(config.max_abs_value)
  except (TypeError, jax.errors.ConcretizationTypeError) as error:
    raise ValueError("max_abs_value must be a concrete (Python) number, got "
                     f"{config.max_abs_value!r}") from error
  if not math.isfinite(bound) or bound <= 0:
    raise ValueError(f"max_abs_value must be finite and > 0, got {bound}")
  return bits, bound


def _clip_bound(config: SecureAggregationConfig) -> np.float32:
  """The largest float32 <= B: clipping there never moves a float32 input that lies in [-B, B]."""
  with np.errstate(over="ignore"):  # a huge B becomes inf here; check_range refuses it anyway
    bound = np.float32(config.max_abs_value)
  if float(bound) > float(config.max_abs_value):
    bound = np.nextafter(bound, np.float32(0))
  return bound


def _max_encoded(config: SecureAggregationConfig) -> int:
  """Q: the largest |integer| `encode` can produce, rounded exactly as the device rounds it."""
  with np.errstate(over="ignore"):
    scaled = _clip_bound(config) * np.float32(2.0**config.fractional_bits)
  return int(np.rint(scaled)) if np.isfinite(scaled) else _WRAP * 2


def check_range(config: SecureAggregationConfig, num_clients: int) -> None:
  """Refuses a configuration whose sum over `num_clients` clients could wrap modulo 2**32.

  Args:
    config: The fixed-point encoding.
    num_clients: C, how many encoded vectors may be summed (an upper bound is fine).

  Returns:
    None. Raises ValueError, naming fractional_bits, max_abs_value and num_clients, when C * B *
    2**f >= 2**31 or C * round(B * 2**f) >= 2**31 (the sum of C clients at +-B could then leave
    the int32 range and decode to a wrong number), or when fractional_bits is outside [0, 30],
    max_abs_value is not finite and > 0, or num_clients < 1.
  """
  bits, bound = _validated(config)
  if isinstance(num_clients, bool) or not isinstance(num_clients, (int, np.integer)):
    raise ValueError(f"num_clients must be a positive integer, got {num_clients!r}")
  clients = operator.index(num_clients)
  if clients < 1:
    raise ValueError(f"num_clients must be >= 1, got {clients}")
  # Exact rational arithmetic: a float64 product could round across the boundary.
  worst = fractions.Fraction(bound) * clients * 2**bits
  worst_encoded = clients * _max_encoded(config)
  if worst >= _WRAP or worst_encoded >= _WRAP:
    # The largest cohort that passes both conditions, for the message.
    safe = min((_WRAP - 1) // max(_max_encoded(config), 1),
               math.ceil(_WRAP / (fractions.Fraction(bound) * 2**bits)) - 1)
    advice = (f"sum at most {safe} clients with this config" if safe >= 1
              else "this config is unsafe even for a single client")
    raise ValueError(
        f"num_clients * max_abs_value * 2**fractional_bits = {clients} * {bound!r} * 2**{bits} "
        f"= {float(worst):.6g} (largest encoded sum {worst_encoded}) is not below 2**31: the sum "
        f"of {clients} encoded clients could wrap modulo 2**32 and decode to a wrong number. "
        f"Lower fractional_bits or max_abs_value, or {advice}.")


def encode(values: jax.Array, config: SecureAggregationConfig) -> tuple[jax.Array, jax.Array]:
  """Clip to [-B, B] and encode as two's-complement fixed point modulo 2**32.

  NaN policy: a NaN entry is encoded as 0 and counted as clipped (so is +-inf, encoded as +-B);
  a caller that must not aggregate such inputs checks the count (or finiteness) itself.

  Args:
    values: float32 [..., D] (other float dtypes are cast to float32 first).
    config: The encoding; must be safe for one client (`check_range(config, 1)`), and static
      (Python numbers) under jit.

  Returns:
    (uint32 [..., D] bit pattern of the int32 round(clip(x, -B, B) * 2**f),
     int32 [...] number of entries per vector that were outside [-B, B] or NaN).
  """
  check_range(config, 1)  # every single entry must fit an int32
  values = jnp.asarray(values, jnp.float32)
  if values.ndim < 1:
    raise ValueError(f"encode expects values of shape [..., D], got shape {values.shape}")
  bound = _clip_bound(config)
  # `<=` is False for NaN, so NaN is counted along with +-inf and everything beyond B.
  clipped = jnp.sum(jnp.logical_not(jnp.abs(values) <= bound), axis=-1, dtype=jnp.int32)
  safe = jnp.where(jnp.isnan(values), jnp.float32(0), jnp.clip(values, -bound, bound))
  # A power-of-two scale is exact in float32, and the rounded result is an integer of magnitude
  # <= Q < 2**31, so the int32 conversion is exact.
  scaled = jnp.round(safe * np.float32(2.0**config.fractional_bits))
  return jax.lax.bitcast_convert_type(scaled.astype(jnp.int32), jnp.uint32), clipped


def decode(total: jax.Array, config: SecureAggregationConfig) -> jax.Array:
  """Reads a (sum of) encoded vector(s) back as float32.

  Args:
    total: uint32 [...], a sum of `encode` outputs modulo 2**32.
    config: The encoding used by `encode`.

  Returns:
    float32 [...]: the int32 read of `total` times 2**-f. Exact as an integer when the true sum
    lies in [-2**31, 2**31) (which `check_range` guarantees), then rounded to float32.
  """
  check_range(config, 1)
  total = jnp.asarray(total)
  if total.dtype != jnp.uint32:
    raise TypeError(f"decode expects uint32, got {total.dtype}")
  signed = jax.lax.bitcast_convert_type(total, jnp.int32)
  return signed.astype(jnp.float32) * np.float32(2.0**-config.fractional_bits)


def _pair_seed(round_key: jax.Array, id_a: jax.Array, id_b: jax.Array) -> jax.Array:
  """s_ab: a function of (round_key, min id, max id) only, so both ends derive the same seed."""
  return jax.random.fold_in(jax.random.fold_in(round_key, jnp.minimum(id_a, id_b)),
                            jnp.maximum(id_a, id_b))


def _signed_pair_mask(round_key: jax.Array, self_id: jax.Array, other_id: jax.Array,
                      dim: int) -> jax.Array:
  """+PRG(s) if self_id < other_id else -PRG(s), mod 2**32: the two ends of a pair cancel."""
  stream = jax.random.bits(_pair_seed(round_key, self_id, other_id), (dim,), jnp.uint32)
  return jnp.where(self_id < other_id, stream, jnp.uint32(0) - stream)


def _cohort_arrays(client_ids: jax.Array, present: jax.Array | None,
                   num: int) -> tuple[jax.Array, jax.Array]:
  """ids as int32 [C] and present as bool [C] (all True when None), with shapes checked."""
  client_ids = jnp.asarray(client_ids, jnp.int32)
  present = (jnp.ones((num,), jnp.bool_) if present is None
             else jnp.asarray(present, jnp.bool_))
  if client_ids.shape != (num,) or present.shape != (num,):
    raise ValueError(f"client_ids and present must have shape ({num},), got "
                     f"{client_ids.shape} and {present.shape}")
  return client_ids, present


def pairwise_mask(round_key: jax.Array, client_ids: jax.Array, index: int | jax.Array, dim: int,
                  present: jax.Array | None = None) -> jax.Array:
  """The total pairwise mask of client `client_ids[index]`, as that client computes it.

  Sum over partners j != i of the cohort of +PRG(s_ij) if id_i < id_j else -PRG(s_ij), mod 2**32,
  with s_ij = fold_in(fold_in(round_key, min(id_i, id_j)), max(id_i, id_j)) and PRG(s) =
  `jax.random.bits(s, (dim,), jnp.uint32)`. Ids of present clients must be distinct (two equal
  ids would share a seed and sign, and their masks would not cancel); any int32 values work.

  Args:
    round_key: The round's PRNG key (typed or raw uint32 [2]).
    client_ids: int32 [C], the id of every slot.
    index: Which slot's mask to compute (int or traced int32 []).
    dim: D, static.
    present: bool [C]; slots with False are padding and never take part in a pair (a padding
      slot's own mask is 0). None: every slot is present.

  Returns:
    uint32 [dim]. Loops over partners, one [dim] stream at a time, so vmapping it over the C
    clients costs [C, dim] memory, not [C, C, dim].
  """
  client_ids, present = _cohort_arrays(client_ids, present, jnp.shape(client_ids)[0])
  self_id = client_ids[index]

  def add_partner(j, total):
    takes_part = jnp.logical_and(present[j], j != index)
    return jnp.where(takes_part, total + _signed_pair_mask(round_key, self_id, client_ids[j], dim),
                     total)

  total = jax.lax.fori_loop(0, client_ids.shape[0], add_partner,
                            jnp.zeros((dim,), jnp.uint32))
  return jnp.where(present[index], total, jnp.uint32(0))


def mask_uploads(encoded: jax.Array, client_ids: jax.Array, present: jax.Array,
                 round_key: jax.Array) -> MaskedUpload:
  """Client side: every present client adds its pairwise mask to its encoded update.

  Each row is computed exactly as that client would (`pairwise_mask`, vmapped over clients).

  Args:
    encoded: uint32 [C, D], `encode` outputs.
    client_ids: int32 [C], distinct among present slots.
    present: bool [C]; False marks padding slots, which take part in no pair.
    round_key: The round's PRNG key.

  Returns:
    MaskedUpload with masked uint32 [C, D] (padding rows are 0: a padding slot sends nothing).
  """
  encoded = jnp.asarray(encoded)
  if encoded.dtype != jnp.uint32 or encoded.ndim != 2:
    raise TypeError(f"mask_uploads expects uint32 [C, D], got {encoded.dtype} {encoded.shape}")
  num, dim = encoded.shape
  client_ids, present = _cohort_arrays(client_ids, present, num)
  masks = jax.vmap(lambda index: pairwise_mask(round_key, client_ids, index, dim, present))(
      jnp.arange(num))
  return MaskedUpload(masked=jnp.where(present.reshape(num, 1), encoded + masks, jnp.uint32(0)))


def unmask_sum(uploads: MaskedUpload, client_ids: jax.Array, present: jax.Array,
               survived: jax.Array, round_key: jax.Array) -> jax.Array:
  """Server side: the sum of the survivors' encoded vectors, from their masked uploads only.

  Summing the survivors' uploads cancels every mask between two survivors. What is left is, for
  each (survivor i, dropped j) pair, survivor i's term +-PRG(s_ij); its sum over survivors equals
  minus dropped client j's own mask restricted to survivor partners, so the server adds that back
  for every dropped j. SIMULATED STEP: in the real protocol the server learns those seeds s_ij
  by reconstructing j's key from Shamir shares the survivors reveal; here `unmask_sum` derives
  them from `round_key`. No individual unmasked vector is ever needed.

  Cost: one [C, D] sum, then one [C, D] step (C PRG streams of D words) per client that dropped
  after masking, in a loop whose trip count is that number (none when nobody dropped, or when
  nobody survived, since the sum is then 0).

  Args:
    uploads: MaskedUpload with masked uint32 [C, D].
    client_ids: int32 [C], as given to `mask_uploads`.
    present: bool [C], as given to `mask_uploads`.
    survived: bool [C], present clients whose masked upload arrived (anded with `present`, so
      padding is never summed).
    round_key: The round's PRNG key (stands in for the revealed seeds, see above).

  Returns:
    uint32 [D]: the sum over survivors of their encoded vectors, modulo 2**32.
  """
  masked = jnp.asarray(uploads.masked)
  if masked.dtype != jnp.uint32 or masked.ndim != 2:
    raise TypeError(f"unmask_sum expects uint32 [C, D] uploads, got {masked.dtype} "
                    f"{masked.shape}")
  num, dim = masked.shape
  client_ids, present = _cohort_arrays(client_ids, present, num)
  survived = jnp.logical_and(jnp.asarray(survived, jnp.bool_), present)
  if survived.shape != (num,):
    raise ValueError(f"survived must have shape ({num},), got {survived.shape}")
  dropped = jnp.logical_and(present, jnp.logical_not(survived))
  keep = survived.reshape(num, 1)
  # where, not a product: padding and dropped rows may hold anything.
  arrived = jnp.sum(jnp.where(keep, masked, jnp.uint32(0)), axis=0, dtype=jnp.uint32)

  # Dropped slots first, so the loop runs exactly once per dropped client.
  order = jnp.argsort(jnp.logical_not(dropped), stable=True)
  num_dropped = jnp.where(jnp.any(survived), jnp.sum(dropped, dtype=jnp.int32), 0)
  partner_masks = jax.vmap(_signed_pair_mask, in_axes=(None, None, 0, None))

  def restore(k, total):
    dropped_slot = order[k]
    # The dropped client's view of each pair: minus what the survivor added for it.
    masks = partner_masks(round_key, client_ids[dropped_slot], client_ids, dim)
    return total + jnp.sum(jnp.where(keep, masks, jnp.uint32(0)), axis=0, dtype=jnp.uint32)

  return jax.lax.fori_loop(0, num_dropped, restore, arrived)


def secure_sum(values: jax.Array, client_ids: jax.Array, present: jax.Array, survived: jax.Array,
               round_key: jax.Array,
               config: SecureAggregationConfig) -> tuple[jax.Array, jax.Array]:
  """encode -> mask_uploads -> unmask_sum -> decode: the survivors' sum, as the server learns it.

  Args:
    values: float32 [C, D], one row per client slot.
    client_ids: int32 [C], distinct among present slots.
    present: bool [C]; False marks padding.
    survived: bool [C], present clients whose upload arrived.
    round_key: The round's PRNG key.
    config: The encoding (static under jit); `check_range(config, C)` must pass for the slot
      count C (conservative: at most C clients are ever summed).

  Returns:
    (float32 [D] sum over survivors of their clipped values, within C * 0.5 * 2**-f plus float32
     rounding of the exact sum; int32 [] entries clipped (or NaN) over the survivors).
  """
  values = jnp.asarray(values, jnp.float32)
  if values.ndim != 2:
    raise ValueError(f"secure_sum expects values of shape [C, D], got {values.shape}")
  num, dim = values.shape
  check_range(config, num)
  if num * dim >= _WRAP:
    raise ValueError(f"{num} clients * {dim} entries: the clipped-entry count could wrap")
  encoded, clipped = encode(values, config)
  # The count travels as one more masked coordinate: the server learns only its total.
  counts = jax.lax.bitcast_convert_type(clipped, jnp.uint32).reshape(num, 1)
  uploads = mask_uploads(jnp.concatenate([encoded, counts], axis=1), client_ids, present,
                         round_key)
  total = unmask_sum(uploads, client_ids, present, survived, round_key)
  return (decode(total[:dim], config),
          jax.lax.bitcast_convert_type(total[dim], jnp.int32))
