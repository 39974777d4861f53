-- _varint: protobuf base-128 varint encoding of a non-negative integer below 2^53.
-- A fragment pasted into scripts with `--!include _varint` (see __init__.py); not a script itself.
local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
