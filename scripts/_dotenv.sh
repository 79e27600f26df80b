# Sourced by scripts/dev.sh: write_dev_env FILE writes the development .env that every manage.py command
# reads (see README: Configuration), unless FILE exists: .env.example with every variable commented out
# except DEBUG=1 and a SECRET_KEY generated for this checkout. Uncomment a line to change a default.
write_dev_env() {
  local file="$1" example secret
  example="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.env.example"
  [ -e "$file" ] && return 0
  secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')"
  {
    echo "# Written by scripts/dev.sh for development on this machine (not committed; delete it to start afresh)."
    echo "# Real environment variables override these values. Without this file DEBUG=0 and SECRET_KEY is required."
    sed -E -e '/^# Every setting/,/^# \(see README/d' -e 's/^([A-Z_]+=)/# \1/' \
      -e "s/^# DEBUG=.*/DEBUG=1/" -e "s/^# SECRET_KEY=.*/SECRET_KEY=$secret/" "$example"
  } > "$file"
  chmod 600 "$file"
  echo "dev.sh: wrote $file (DEBUG=1 and a new SECRET_KEY), read by every manage.py command"
}
