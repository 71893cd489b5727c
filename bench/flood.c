/* A UDP flood for pktfate's bench and tests: IPv4 datagrams built by hand and
 * sent in batches with sendmmsg() through an IPPROTO_RAW socket, so that each one
 * can carry its own source port (distinct flows) with a valid checksum.
 *
 * usage: flood SRC DST DPORT PPS SECONDS [FLOWS]
 *   PPS 0: as fast as possible; otherwise paced per batch.
 *   FLOWS: distinct source ports to cycle through, from 1024 (default 1, at most 64000).
 * Prints "sent N" at the end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define PAYLOAD 18

struct packet {
	uint8_t ip[20];
	uint8_t udp[8];
	uint8_t data[PAYLOAD];
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t sum16(const void *buf, size_t len, uint32_t sum)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)(p[len - 1] << 8);
	return sum;
}

static uint16_t fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void build(struct packet *pk, struct in_addr src, struct in_addr dst, uint16_t sport,
		  uint16_t dport)
{
	uint16_t ulen = sizeof(pk->udp) + PAYLOAD, csum;
	uint32_t pseudo;

	memset(pk, 0, sizeof(*pk));
	pk->ip[0] = 0x45;
	pk->ip[8] = 64;                 /* TTL */
	pk->ip[9] = IPPROTO_UDP;        /* length, id, checksum: filled in by the kernel */
	memcpy(pk->ip + 12, &src, 4);
	memcpy(pk->ip + 16, &dst, 4);
	pk->udp[0] = sport >> 8;
	pk->udp[1] = sport & 0xff;
	pk->udp[2] = dport >> 8;
	pk->udp[3] = dport & 0xff;
	pk->udp[4] = ulen >> 8;
	pk->udp[5] = ulen & 0xff;
	memcpy(pk->data, "pktfate bench", 13);
	pseudo = sum16(pk->ip + 12, 8, 0) + IPPROTO_UDP + ulen;
	csum = fold(sum16(pk->udp, ulen, pseudo));
	csum = csum ? csum : 0xffff;
	pk->udp[6] = csum >> 8;
	pk->udp[7] = csum & 0xff;
}

int main(int argc, char **argv)
{
	struct in_addr src, dst;
	struct sockaddr_in to = { .sin_family = AF_INET };
	static struct packet pkts[BATCH];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long sent = 0;
	long flows, pps;
	double seconds, start, end;
	int fd;

	if (argc < 6 || !inet_aton(argv[1], &src) || !inet_aton(argv[2], &dst)) {
		fprintf(stderr, "usage: flood SRC DST DPORT PPS SECONDS [FLOWS]\n");
		return 2;
	}
	pps = atol(argv[4]);
	seconds = atof(argv[5]);
	flows = argc > 6 ? atol(argv[6]) : 1;
	if (flows < 1 || flows > 64000)
		flows = 1;
	to.sin_addr = dst;
	fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (fd < 0) {
		perror("flood: socket (root needed)");
		return 2;
	}
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = &pkts[i];
		iov[i].iov_len = sizeof(pkts[i]);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &to;
		msgs[i].msg_hdr.msg_namelen = sizeof(to);
	}
	for (int i = 0; i < BATCH; i++)
		build(&pkts[i], src, dst, 1024, (uint16_t)atoi(argv[3]));
	start = now();
	end = start + seconds;
	while (now() < end) {
		for (int i = 0; flows > 1 && i < BATCH; i++)
			build(&pkts[i], src, dst, (uint16_t)(1024 + (sent + i) % flows),
			      (uint16_t)atoi(argv[3]));
		int done = sendmmsg(fd, msgs, BATCH, 0);

		if (done > 0)
			sent += done;
		if (pps > 0) {
			double due = start + (double)sent / pps;

			while (now() < due && now() < end)
				;
		}
	}
	printf("sent %llu\n", sent);
	return 0;
}
