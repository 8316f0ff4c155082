import io, json, base64, sys, numpy as np, requests, nrrd, tempfile
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
from PIL import Image
url=sys.argv[1]; out=sys.argv[2]
objs=requests.get(f"{url}/datastore/",params={"output":"all"}).json()["objects"]
sel={"normal":[], "distended":[]}
for k,o in sorted(objs.items()):
    info=o.get("labels",{}).get("final",{}).get("info",{})
    if info.get("label") in sel and len(sel[info["label"]])<3: sel[info["label"]].append((k,info["box"]))
rows=sel["normal"]+sel["distended"]
fig,ax=plt.subplots(len(rows),3,figsize=(12,2.6*len(rows)))
for i,(k,box) in enumerate(rows):
    img=np.asarray(Image.open(io.BytesIO(requests.get(f"{url}/datastore/image",params={"image":k}).content)))
    r=requests.post(f"{url}/infer/loris_anomaly_map",params={"image":k},data={"params":json.dumps({"box":box})})
    body=r.content; ct=r.headers["content-type"]; b=ct.split("boundary=")[1].encode()
    parts=[p for p in body.split(b"--"+b) if p.strip() not in (b"",b"--")]
    params=None; amap=None
    for p in parts:
        head,_,data=p.partition(b"\r\n\r\n"); data=data.rstrip(b"\r\n")
        if b"params" in head: params=json.loads(data)
        else:
            f=tempfile.NamedTemporaryFile(suffix=".nrrd",delete=False); f.write(data); f.close(); amap=nrrd.read(f.name,index_order="C")[0]
    mask=np.asarray(Image.open(io.BytesIO(base64.b64decode(params["mask_png_base64"]))))
    x0,y0,x1,y1=box
    ax[i,0].imshow(img,cmap="gray"); ax[i,0].add_patch(plt.Rectangle((x0,y0),x1-x0,y1-y0,fill=False,ec="y")); ax[i,0].set_title(f"{k} score {params['score']:.3f} -> {'distended' if params['distended'] else 'normal'}",fontsize=8)
    lo,hi=params["display_range"]; ax[i,1].imshow(img,cmap="gray"); ax[i,1].imshow(np.ma.masked_less(amap,lo),cmap="magma",vmin=lo,vmax=hi,alpha=0.8); ax[i,1].set_title(f"{params['pixel_metric']} map [{lo:.2f},{hi:.2f}]",fontsize=8)
    ax[i,2].imshow(img,cmap="gray"); ax[i,2].imshow(np.ma.masked_where(mask==0,mask),cmap="autumn",alpha=0.7); ax[i,2].set_title(f"segmentation: {mask[y0:y1,x0:x1].mean():.2f} of the box",fontsize=8)
for a in ax.ravel(): a.axis("off")
plt.tight_layout(); plt.savefig(out,dpi=70)
