#!/bin/sh
# /srv/www/cgi-bin/index.cgi: answers GET / with the instance's name, boot
# count and the last counter value known to be on disk.
name=unknown
boots=0
counter=0
read -r name </run/demo/name
read -r boots </run/demo/boots
read -r counter </run/demo/counter
case "$boots" in '' | *[!0-9]*) boots=0 ;; esac
case "$counter" in '' | *[!0-9]*) counter=0 ;; esac
printf 'Content-Type: application/json\r\nCache-Control: no-store\r\n\r\n'
printf '{"name":"%s","boots":%s,"counter":%s}\n' "$name" "$boots" "$counter"
